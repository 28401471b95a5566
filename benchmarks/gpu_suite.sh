#!/usr/bin/env bash
# Everything this repository checks or measures on a GPU, in stages that each fit one 10-minute call of a lent GPU
# machine (see BENCHMARKS.md, "On a GPU"). Results go to $OUT (the device tool's output folder) or ./gpu-results.
#
#   bash benchmarks/gpu_suite.sh prepare          # HERE, on a CPU machine with PyPI: fills .gpu/ (git-ignored)
#   bash benchmarks/gpu_suite.sh tests bench      # there: CUDA cases of the fast-path and mixed-precision tests;
#                                                 #        the goal table (bench_training_step.py)
#   bash benchmarks/gpu_suite.sh funsd            # there: base AETNet vs LayoutLMv3 on FUNSD, seeds $SEEDS (1,2,3)
#   bash benchmarks/gpu_suite.sh ablation         # there: leave-one-objective-out on FUNSD, seeds $SEEDS
#   bash benchmarks/gpu_suite.sh rvlcdip          # there: base AETNet vs LayoutLMv3 on rvlcdip3 (OCR made by prepare)
#
# `prepare` downloads the Python wheels the GPU image lacks (.gpu/whl), copies FUNSD and rvlcdip3 from ../shared/data
# (the device gets only the repository; the copies stay untracked) and writes rvlcdip3's split files with their
# Tesseract OCR inline, so that no Tesseract is needed there. All of .gpu is just under a call's 64 MiB; carry
# `.gpu/whl` with every call, plus `.gpu/data/funsd` (funsd, ablation) or `.gpu/data/rvlcdip3` (rvlcdip).
#
# The FUNSD stages keep every run under $RESULTS (default .gpu/results, kept while the machine stays warm), so a stage
# cut short continues where it stopped on the next call; each also packs the runs' small files into
# $OUT/funsd-base-runs.tar.gz. Unpacked into benchmarks/results/ here, they are read back (not rerun) by
# `benchmarks/compare.py --task funsd --out benchmarks/results/funsd-base ...` into one summary, every run's GPU named in
# summary.json. SEEDS=1,2 then SEEDS=3 splits a stage over two calls.
#
# SMOKE=1 runs every stage at toy size on the CPU, to check the commands without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
RESULTS=${RESULTS:-.gpu/results}
SEEDS=${SEEDS:-1,2,3}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$RESULTS"

if [[ "${SMOKE:-0}" == 1 ]]; then
  SIZE=tiny; DEVICE=cpu; PRECISION=(); FUNSD_TRAIN=(--max_steps 2 --max_train_samples 4 --max_eval_samples 2)
  RVL_TRAIN=(--max_steps 2 --max_train_samples 6 --max_eval_samples 3)
  BENCH=(--sizes tiny --batch-sizes 1 --steps 1 --warmup 0)
else
  # From-scratch base models: AdamW at 1e-4 with 10% warm-up, bf16 autocast (the goal table's precision).
  SIZE=base; DEVICE=cuda; PRECISION=(--bf16 True --dataloader_num_workers 4)
  FUNSD_TRAIN=(--num_train_epochs 20 --learning_rate 1e-4)
  RVL_TRAIN=(--num_train_epochs 30 --learning_rate 1e-4 --per_device_train_batch_size 16)
  BENCH=(--sizes base --batch-sizes 1,8 --steps 20 --warmup 5)
fi

setup_there() {
  # The GPU image has torch and an older transformers; the wheels from `prepare` bring the rest.
  if [[ -d .gpu/whl && $DEVICE == cuda ]]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
  fi
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
  $PYTHON -c "import torch, transformers, datasets, aetnet
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
}

pack_runs() {  # the small files of each run: scores, trainer state (loss history), wall time, log
  local name=$1
  (cd "$RESULTS" && find "$name" \( -name all_results.json -o -name trainer_state.json -o -name wall_seconds.txt \
      -o -name run_info.json -o -name log.txt -o -name 'summary.*' \) -print0 \
    | tar -czf - --null -T -) > "$OUT/$name-runs.tar.gz"
}

for stage in "$@"; do
  case $stage in
    prepare)
      mkdir -p .gpu/whl .gpu/data
      $PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
        transformers==5.23.0 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 pytesseract==0.3.13
      $PYTHON -m pip wheel -q --no-deps -w .gpu/whl seqeval==1.2.2
      rm -rf .gpu/data/funsd && cp -r ../shared/data/funsd .gpu/data/funsd
      $PYTHON benchmarks/inline_ocr.py ../shared/data/rvlcdip3 .gpu/data/rvlcdip3
      du -sh .gpu/whl .gpu/data
      ;;
    tests)
      setup_there
      $PYTHON -m pytest -q -p no:cacheprovider tests/test_fast_paths.py tests/test_mixed_precision.py -k $DEVICE 2>&1 \
        | tee "$OUT/tests-$DEVICE.log"
      ;;
    bench)
      setup_there
      $PYTHON benchmarks/bench_training_step.py --device $DEVICE "${BENCH[@]}" --seq-len 512 --dtypes bf16,fp32 \
        --attn-implementation sdpa,eager --out "$OUT/bench-$SIZE.json" --plot
      ;;
    funsd | ablation)
      setup_there
      # One folder for both stages: the ablation reads the funsd stage's runs and adds its own to the same summary.
      name=funsd-$SIZE variants=aetnet,layoutlmv3
      [[ $stage == ablation ]] && variants=$variants,no-ditc,no-imc,no-glitc,no-pita,no-alignment
      $PYTHON benchmarks/compare.py --task funsd --variants $variants --seeds "$SEEDS" --out "$RESULTS/$name" -- \
        --dataset_dir .gpu/data/funsd --model_size $SIZE "${FUNSD_TRAIN[@]}" "${PRECISION[@]}" --logging_steps 10 \
        --do_predict False
      pack_runs "$name"
      ;;
    rvlcdip)
      setup_there
      for baseline in "" layoutlmv3; do
        name=rvlcdip3-$SIZE${baseline:+-$baseline}
        mkdir -p "$RESULTS/$name"
        $PYTHON examples/run_rvlcdip.py --dataset_dir .gpu/data/rvlcdip3 --output_dir "$RESULTS/$name" \
          --model_size $SIZE "${RVL_TRAIN[@]}" "${PRECISION[@]}" --disable_tqdm True ${baseline:+--baseline $baseline} \
          2>&1 | tee "$RESULTS/$name/log.txt"
        cp "$RESULTS/$name/all_results.json" "$OUT/$name.json"
      done
      ;;
    *)
      echo "unknown stage '$stage': choose among prepare tests bench funsd ablation rvlcdip" >&2
      exit 2
      ;;
  esac
done
