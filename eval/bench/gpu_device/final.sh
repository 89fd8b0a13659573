# Device-tool recipe (eval/bench/README.md "Whole build on one GPU"): copy this checkout (code only) into /work/main/.gpucode
# with this folder as .gpucode/dev, and eval/bench wheels orjson + prometheus-client into .gpucode/whl; paths below are the device machine's.
# last device call: carry .gpukit/p5 .gpucode; unpack p5 and the code, then the whole 1M build
export PYTHONUNBUFFERED=1
bash .gpukit/p5/unpack.sh
rm -rf /root/gc && mkdir -p /root/gc && cp -r .gpucode/. /root/gc/
cd /root/gc
for w in whl/*.whl; do n=$(basename $w | cut -d- -f1); python3 -c "import $n" 2>/dev/null && echo "have $n" || { python3 -m pip install -q --no-index --no-deps --no-compile --target /root/kit/site $w && echo "installed $n"; }; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; free -g | head -2; df -h /root | tail -1
cat /root/gb/gen.log
bash dev/build.sh
