#!/usr/bin/env bash
# Compares what two builds of ctnn-train and ctnn-eval do, byte for byte: a refactoring must not
# change a checkpoint, a resume snapshot, the loss log or any message.
#
#   tests/compare_programs.sh OLD_BIN_DIR NEW_BIN_DIR [WORK_DIR]
#
# e.g. with the commit before a change built in build-base (git archive BASE | tar -x -C
# build-base/src; cmake -S build-base/src -B build-base/bld; cmake --build build-base/bld
# --target ctnn-train ctnn-eval). For each program run (both networks on SYNTHETIC data, trained
# to a snapshot mid-epoch, resumed to the end, then evaluated; and each kind of bad input) it
# compares stdout, stderr and the exit status (the timing line "wall time: ..." left out, the
# run's directory written as WORK), and every file written. Exit status 0 when all agree; otherwise the differences are listed.
set -uo pipefail
old=$(cd "$1" && pwd) new=$(cd "$2" && pwd) work=${3:-$(mktemp -d)}
rm -rf "$work" && mkdir -p "$work"
fails=0

# run NAME ARGS...: runs both builds' program (the first ARG) with the rest of ARGS in
# $work/{old,new}/NAME, the string @OUT standing for that directory.
run() {
  local name=$1 prog=$2
  shift 2
  for side in old new; do
    local dir="$work/$side/$name" bin
    [ $side = old ] && bin=$old || bin=$new
    mkdir -p "$dir"
    local args=("${@//@OUT/$dir}")
    (cd "$dir" && "$bin/$prog" "${args[@]}" > "$dir.stdout" 2> "$dir.stderr"; echo $? > "$dir.status")
    sed -i -e '/^wall time: /d' -e "s|$work/$side|WORK|g" "$dir.stdout" "$dir.stderr"
  done
  for f in stdout stderr status; do
    if ! cmp -s "$work/old/$name.$f" "$work/new/$name.$f"; then
      echo "DIFFERENT: $name $f"; diff "$work/old/$name.$f" "$work/new/$name.$f" | head -20; fails=$((fails + 1))
    fi
  done
  if ! diff -r "$work/old/$name" "$work/new/$name" > /dev/null; then
    echo "DIFFERENT: $name files"; diff -rq "$work/old/$name" "$work/new/$name" | head; fails=$((fails + 1))
  fi
  echo "compared: $name ($(cd "$work/new/$name" && ls | tr '\n' ' '))"
}

common=(--synthetic 60 --batch-size 20 --seed 3 --threads 2 --checkpoint-every 2 --lr-decay-every 1 --out @OUT)
for model in vgg16 resnet50; do
  run ${model}_partial ctnn-train --model $model "${common[@]}" --epochs 2 --max-steps 4  # stops in epoch 2
  # Resume the partial run in a copy of its directory, to the end of two epochs.
  for side in old new; do cp -r "$work/$side/${model}_partial" "$work/$side/${model}_resumed"; done
  run ${model}_resumed ctnn-train --model $model "${common[@]}" --epochs 2 --resume
  for side in old new; do cp "$work/$side/${model}_resumed/${model}"*_final.ckpt "$work/$side/${model}.ckpt"; done
  run ${model}_eval ctnn-eval --model $model --checkpoint ../${model}.ckpt --synthetic 60 --seed 3 --threads 2
done
run no_model ctnn-train --synthetic 10
run bad_model ctnn-train --model alexnet
run bad_number ctnn-train --model vgg16 --lr fast
run bad_range ctnn-train --model vgg16 --batch-size 0
run unknown_flag ctnn-train --model vgg16 --epoch 2
run missing_value ctnn-train --model
run missing_data ctnn-train --model vgg16 --data /nonexistent/cifar
run eval_no_model ctnn-eval --checkpoint x.ckpt
run eval_bad_model ctnn-eval --model alexnet --checkpoint x.ckpt
run eval_missing_checkpoint ctnn-eval --model vgg16 --checkpoint /nonexistent.ckpt --synthetic 10
run eval_missing_data ctnn-eval --model resnet50 --checkpoint x.ckpt --data /nonexistent/cifar
run help ctnn-train --help
run eval_help ctnn-eval --help
if [ $fails -eq 0 ]; then echo "all the same"; else echo "$fails differences"; fi
exit $((fails > 0))
