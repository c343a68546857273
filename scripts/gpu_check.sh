#!/usr/bin/env bash
# One offline GPU measurement (`make gpu-check`), run from the project root on a bare CUDA
# machine with no network: install the carried wheels, run `pytest -m gpu`, the encoder
# benchmark on CUDA, and one CoNLL-2003 training epoch; write a summary into $OUT (else
# gpu-check-out/). Each step is timed and recorded; a failed step does not stop the next.
#
# Carried with the tree: wheels/py<X.Y>/ and gpu-data/conll2003/ (both from `make gpu-wheels`).
# BIRNN_GPU_CHECK_DRY=1 (`make gpu-check-dry`) runs the CUDA steps on the CPU at tiny sizes.
# PYTHON: the interpreter to install into and run (default python3).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
DRY=${BIRNN_GPU_CHECK_DRY:-0}
OUTDIR=${OUT:-gpu-check-out}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/birnn-gpu-check.XXXXXX")
SITE=$WORK/site  # the carried wheels go here, first on PYTHONPATH
HELPER=src/birnn/bench/gpu_check.py
LOG=$OUTDIR/log.txt
STARTED=$SECONDS
mkdir -p "$OUTDIR"
: >"$LOG"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if [ "$DRY" = 1 ]; then  # a loaded 2-core CPU: generous limits, tiny sizes
    LIMITS=(600 600 600)
    BENCH_OUT=$WORK/bench  # docs/benchmarks/gpu keeps the real GPU numbers
    BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:-"--devices cpu --cells lstm,mixed --merges concat,sum
        --layers 2 --hidden 8 --batch 2 --seq 5 --input 6 --steps 1 --warmup 1 --ragged
        --matmul-size 64 --threads 1 --profile --vocab 20 --tags 3"}
    TRAIN_ARGS=${GPU_CHECK_TRAIN_ARGS:-"trainer=cpu ++trainer.limit_train_batches=3
        ++trainer.limit_val_batches=2 ++trainer.limit_test_batches=2
        ++trainer.limit_predict_batches=2"}
else  # seconds for the tests, the benchmark and the training: 10 minutes in all, at most
    LIMITS=(150 210 180)
    BENCH_OUT=docs/benchmarks/gpu
    BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:-"--devices cuda --cells lstm,gru,mixed
        --merges concat,sum,mul,ave --layers 2 --hidden 256 --precisions fp32,bf16 --ragged
        --steps 7 --warmup 2 --profile"}
    TRAIN_ARGS=${GPU_CHECK_TRAIN_ARGS:-"trainer=gpu"}
fi

say() { echo "[gpu-check $((SECONDS - STARTED))s] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S CMD...: run CMD with its output in $WORK/NAME.log (then the log), time it,
# record it and refresh the summary. LIMIT_S 0: no time limit (CMD may be a shell function).
step() {
    local name=$1 limit=$2 start=$SECONDS rc note=""
    shift 2
    say "$name: start"
    if [ "$limit" = 0 ]; then
        "$@" >"$WORK/$name.log" 2>&1
    else
        timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    fi
    rc=$?
    cat "$WORK/$name.log" >>"$LOG"
    [ "$rc" = 124 ] && note="stopped after ${limit} s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$note" >>"$WORK/steps.tsv"
    say "$name: exit $rc after $((SECONDS - start)) s $note"
    [ "$rc" = 0 ] || tail -n 15 "$WORK/$name.log" | sed 's/^/    /'
    write_summary
    return "$rc"
}

write_summary() {
    local dry=()
    [ "$DRY" = 1 ] && dry=(--dry)
    "$PY" "$HELPER" summary --work "$WORK" --out "$OUTDIR" "${dry[@]}" >>"$LOG" 2>&1 ||
        say "summary: failed (see $LOG)"
}

install() {
    local wheels
    wheels="wheels/py$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    "$PY" "$HELPER" missing "$wheels" >"$WORK/missing.txt" || return 1
    echo "carried wheels this Python lacks: $(wc -l <"$WORK/missing.txt")"
    if [ -s "$WORK/missing.txt" ]; then
        xargs "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" <"$WORK/missing.txt" || return 1
    fi
    # the project itself, without its pins (the image's torch and Lightning stay)
    PYTHONPATH=$SITE "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . ||
        { echo "editable install failed: src/ goes on PYTHONPATH instead"; touch "$WORK/src-path"; }
}


say "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])') dry=$DRY"
step install 0 install
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
[ -e "$WORK/src-path" ] && PYTHONPATH=$PYTHONPATH:$PWD/src
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
    2>&1 | tee -a "$LOG"

# the files that hold gpu-marked tests (the others may import what the image lacks: seqeval)
mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_*.py)
step pytest-gpu "${LIMITS[0]}" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider "${GPU_TESTS[@]}"
cp "$WORK/pytest-gpu.log" "$OUTDIR/pytest.txt"

# shellcheck disable=SC2086  # the argument lists split on purpose
# only this run's results go out (docs/benchmarks/gpu may hold an earlier run's)
step benchmark "${LIMITS[1]}" "$PY" -m birnn.bench $BENCH_ARGS --out "$BENCH_OUT" &&
    cp "$BENCH_OUT"/results.{json,md,png} "$OUTDIR"/ && write_summary

# shellcheck disable=SC2086
step train-conll2003 "${LIMITS[2]}" "$PY" train.py experiment=conll2003 data.dir=gpu-data/conll2003 \
    logger=csv trainer.max_epochs=1 '~callbacks.progress_bar' trainer.enable_progress_bar=false \
    hydra.run.dir="$WORK/train" $TRAIN_ARGS

write_summary
say "done in $((SECONDS - STARTED)) s; summary in $OUTDIR/summary.md"
cat "$OUTDIR/summary.md"
failed=$(awk -F'\t' '$2 != 0' "$WORK/steps.tsv" | wc -l)
rm -rf "$WORK"
[ "$failed" = 0 ]
