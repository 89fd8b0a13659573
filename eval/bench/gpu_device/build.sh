# device call 5 (after p4): the whole 1M build
export PYTHONUNBUFFERED=1
cd /root/gc && source /root/kit/env.sh
for i in $(seq 60); do [ -f /root/gb/corpus/generation.json ] && break; sleep 2; done
cat /root/gb/corpus/generation.json
python3 -m eval.bench.gpu_build --source eval/datasets/cranfield --docs ${DOCS:-1000000} --work /root/gb --reuse-corpus --timeout ${BUILD_TIMEOUT:-555} --out $OUT/build_${DOCS:-1000000}.json -- --device cuda --sparse-model /root/kit/models/splade16 --dense-model /root/kit/models/minilm16
echo "gpu_build rc $?"
