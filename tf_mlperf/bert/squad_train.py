"""tf-mlperf-squad: fine-tune BERT on SQuAD v1.1 as google-research/bert run_squad.py, then evaluate.

    tf-mlperf-squad --flagfile=flags/bert/squad.cfg --train_file=train-v1.1.json --predict_file=dev-v1.1.json \
        --init_checkpoint=/runs/bert1/checkpoints/ckpt-13700 --model_dir=/runs/squad1
    tf-mlperf-squad --flagfile=flags/bert/squad_smoke_cpu.cfg --train_file=tests/data/squad/tiny-train-v1.1.json \
        --predict_file=tests/data/squad/tiny-dev-v1.1.json --model_dir=/tmp/squad_smoke

As run_squad.py: the training questions are shuffled with random.Random(12345) and turned into features
(tf_mlperf/bert/squad.py: 384 / 128 / 64); num_train_steps = int(questions / train_batch_size *
num_train_epochs), warmup the first warmup_proportion of them; batches of features drawn from a 100-feature
shuffle buffer over the repeated features; loss as run_squad.py; AdamWeightDecay (bert/squad_optimizer.py),
gradients clipped to global norm 1.0. --init_checkpoint: a pretraining checkpoint (the reference's TF1
model.ckpt-28252, tf-models' converted encoder, or one of our own BERT runs: <model_dir>/checkpoints/ckpt-N) or a
SQuAD checkpoint (bert/squad_model.py).

Data-parallel under horovodrun (core/distribution.py; --distribution=auto finds the launcher):
    horovodrun -np 8 -H localhost:8 tf-mlperf-squad --flagfile=flags/bert/squad.cfg ...
--train_batch_size stays the global batch (the reference's): every rank draws the same shuffled feature
stream and takes every size-th feature of it (rank r: r, r + size, ...), batches of train_batch_size / size;
the gradients are averaged over the ranks, then clipped and applied, so N ranks take the steps one process
takes with the same global batch (tests/test_bert_squad_horovod.py). Rank 0's weights are broadcast at the
start; rank 0 alone evaluates and writes. --precision=fp16 scales the loss (dynamic), bf16 does not; weights
stay fp32.

Writes to --model_dir: checkpoints/ckpt-N (tf.train.Checkpoint(model=..., optimizer=...); a rerun resumes from
the latest), predictions.json (qas_id -> answer, as accuracy-squad.py writes it) and squad_eval.json
(exact_match and f1 before training when --eval_before_training, after training, the logged losses).
Then export it for MLPerf Inference: tf-mlperf-export-bert --checkpoint=<model_dir>/checkpoints/ckpt-N.
Exit 0; 2 on an error (one line naming the file or flag and the fix).
"""
from __future__ import annotations

import json
import os
import random
import sys
import time

from absl import app as absl_app
from absl import flags, logging

from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import squad
from tf_mlperf.bert import squad_predictions
from tf_mlperf.base.errors import UserError, run_cli

FLAGS = flags.FLAGS
flags.DEFINE_string("train_file", None, "SQuAD v1.1 training JSON (train-v1.1.json).")
flags.DEFINE_string("predict_file", None, "SQuAD v1.1 JSON to evaluate on (dev-v1.1.json).")
flags.DEFINE_string("vocab_file", None, "The BERT uncased vocab.txt (default: the MLPerf vocab shipped with the "
                    "test data package, the same bytes).")
flags.DEFINE_bool("do_lower_case", True, "Lower-case and strip accents (the uncased model).")
flags.DEFINE_string("bert_config_file", None, "The model's bert_config.json (default: --bert_preset).")
flags.DEFINE_enum("bert_preset", "large", sorted(config_lib.PRESETS), "Built-in config without --bert_config_file.")
flags.DEFINE_string("init_checkpoint", None, "Checkpoint to start from (pretraining or SQuAD).")
flags.DEFINE_string("model_dir", None, "Checkpoints, predictions.json and squad_eval.json go here.")
flags.DEFINE_integer("max_seq_length", squad.MAX_SEQ_LENGTH, "Tokens per feature.")
flags.DEFINE_integer("doc_stride", squad.DOC_STRIDE, "Tokens between the starts of a context's spans.")
flags.DEFINE_integer("max_query_length", squad.MAX_QUERY_LENGTH, "Question tokens kept.")
flags.DEFINE_integer("train_batch_size", 32, "Features per step (run_squad.py's default 32; flags/bert/squad.cfg: 24).")
flags.DEFINE_integer("predict_batch_size", 8, "Features per prediction batch.")
flags.DEFINE_float("learning_rate", 5e-5, "Initial learning rate (run_squad.py's default; squad.cfg: 3e-5).")
flags.DEFINE_float("num_train_epochs", 3.0, "Training epochs, counted in questions (squad.cfg: 2).")
flags.DEFINE_float("warmup_proportion", 0.1, "Share of the steps with a linear warmup.")
flags.DEFINE_integer("n_best_size", squad_predictions.N_BEST_SIZE, "Start and end candidates per feature.")
flags.DEFINE_integer("max_answer_length", squad_predictions.MAX_ANSWER_LENGTH, "Longest answer in tokens.")
flags.DEFINE_enum("final_text", "wordpiece", list(squad_predictions.FINAL_TEXT), "Original-text recovery: wordpiece as "
                  "MLPerf's accuracy-squad.py, basic as run_squad.py.")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Also checkpoint every N steps (and always at the end).")
flags.DEFINE_integer("log_every_steps", 50, "Print step, loss and learning rate every N steps.")
flags.DEFINE_bool("eval_before_training", False, "Also evaluate the initial weights.")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights and of the training batches' shuffle.")
flags.DEFINE_enum("distribution", "auto", ["auto", "horovod", "none"], "horovod: the ranks of horovodrun/mpirun "
                  "train one model (data-parallel); none: one process; auto: horovod when a launcher started it.")
flags.DEFINE_enum("precision", "fp32", ["fp32", "fp16", "bf16"], "Compute precision (core/precision.py): fp16 "
                  "with dynamic loss scaling, bf16 without; weights stay fp32.")
flags.DEFINE_bool("verbose", False, "On an error, print its traceback too.")

SHUFFLE_SEED = 12345            # run_squad.py: random.Random(12345).shuffle(train_examples)
SHUFFLE_BUFFER = 100            # run_squad.py: d.shuffle(buffer_size=100)


def feature_arrays(features, with_positions: bool):
    import numpy as np
    arrays = {name: np.array([getattr(f, name) for f in features], np.int32)
              for name in ("input_ids", "input_mask", "segment_ids")}
    if with_positions:
        arrays["start_positions"] = np.array([f.start_position for f in features], np.int32)
        arrays["end_positions"] = np.array([f.end_position for f in features], np.int32)
    return arrays


def predict_logits(model, features, batch_size: int):
    """The model's logits [n, seq, 2] for the features, in order (the last batch padded, then cut)."""
    import numpy as np
    import tensorflow as tf
    arrays = feature_arrays(features, with_positions=False)
    predict = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    out = []
    for start in range(0, len(features), batch_size):
        batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
        n = len(batch["input_ids"])
        if n < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - n, v.shape[1]), v.dtype)]) for k, v in batch.items()}
        out.append(predict(batch).numpy()[:n])
    return np.concatenate(out)


def evaluate(model, examples, features, tokenizer, source: str) -> tuple[dict, dict]:
    logits = predict_logits(model, features, FLAGS.predict_batch_size)
    results = squad_predictions.results_from_logits(features, logits)
    answers = squad_predictions.predictions(examples, features, results, tokenizer, FLAGS.n_best_size,
                                            FLAGS.max_answer_length, FLAGS.final_text)
    return squad_predictions.evaluate(examples, answers, source), answers


def train() -> dict:
    from tf_mlperf.base import samples

    for name in ("train_file", "predict_file", "model_dir"):
        if not FLAGS[name].value:
            raise UserError(f"--{name}", "is required")
    for name in ("train_batch_size", "predict_batch_size", "n_best_size", "max_answer_length", "log_every_steps",
                 "save_checkpoints_steps"):
        if FLAGS[name].value < 1:
            raise UserError(f"--{name}={FLAGS[name].value}", "must be >= 1")
    if FLAGS.num_train_epochs <= 0 or not 0 <= FLAGS.warmup_proportion <= 1:
        raise UserError(f"--num_train_epochs={FLAGS.num_train_epochs} --warmup_proportion="
                        f"{FLAGS.warmup_proportion}", "need epochs > 0 and 0 <= warmup_proportion <= 1")
    try:
        bert_config = config_lib.load(FLAGS.bert_config_file, FLAGS.bert_preset)
    except (OSError, ValueError) as e:
        raise UserError(f"--bert_config_file={FLAGS.bert_config_file}", f"cannot be read ({e})") from None
    if FLAGS.max_seq_length > bert_config.max_position_embeddings:
        raise UserError(f"--max_seq_length={FLAGS.max_seq_length}", "is longer than the model's "
                        f"max_position_embeddings={bert_config.max_position_embeddings}")
    tokenizer = squad.Tokenizer(FLAGS.vocab_file or str(samples.bert_vocab()), FLAGS.do_lower_case)
    train_examples = squad.read_examples(FLAGS.train_file, is_training=True)
    random.Random(SHUFFLE_SEED).shuffle(train_examples)
    eval_examples = squad.read_examples(FLAGS.predict_file, is_training=False)
    shape = dict(max_seq_length=FLAGS.max_seq_length, doc_stride=FLAGS.doc_stride,
                 max_query_length=FLAGS.max_query_length)
    train_features = squad.convert_examples_to_features(train_examples, tokenizer, is_training=True,
                                                        source=FLAGS.train_file, **shape)
    eval_features = squad.convert_examples_to_features(eval_examples, tokenizer, is_training=False,
                                                       source=FLAGS.predict_file, **shape)
    num_train_steps = int(len(train_examples) / FLAGS.train_batch_size * FLAGS.num_train_epochs)
    num_warmup_steps = int(num_train_steps * FLAGS.warmup_proportion)
    if num_train_steps < 1:
        raise UserError(f"--num_train_epochs={FLAGS.num_train_epochs}", f"gives no step with "
                        f"{len(train_examples)} questions and --train_batch_size={FLAGS.train_batch_size}")
    logging.info("%d training questions -> %d features; %d eval questions -> %d features; %d steps (%d warmup)",
                 len(train_examples), len(train_features), len(eval_examples), len(eval_features),
                 num_train_steps, num_warmup_steps)

    import numpy as np                   # TensorFlow only once the data is known to be good
    import tensorflow as tf
    import tf_keras
    from tf_mlperf.bert import squad_model, squad_optimizer
    from tf_mlperf.core import distribution, precision
    from tf_mlperf.core.train_step import optimizer_variables
    dist = distribution.create(FLAGS.distribution, compression="none")
    if FLAGS.train_batch_size % dist.size:
        raise UserError(f"--train_batch_size={FLAGS.train_batch_size}", f"does not divide over {dist.size} ranks "
                        "(it is the global batch, split evenly): give a multiple of the number of ranks")
    per_rank_batch = FLAGS.train_batch_size // dist.size
    precision.set_policy(FLAGS.precision)
    tf_keras.utils.set_random_seed(FLAGS.seed)
    model = squad_model.build_squad_model(bert_config, FLAGS.max_seq_length)
    if FLAGS.init_checkpoint:
        squad_model.load_checkpoint(model, FLAGS.init_checkpoint, require_head=False)
    optimizer = precision.wrap_optimizer(
        squad_optimizer.create_optimizer(FLAGS.learning_rate, num_train_steps, num_warmup_steps), FLAGS.precision)
    loss_scaled = precision.uses_loss_scale(optimizer)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint_dir = os.path.join(FLAGS.model_dir, "checkpoints")
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=3) if dist.is_chief else None
    latest = manager.latest_checkpoint if manager else tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    dist.broadcast_variables(model.variables + optimizer_variables(optimizer))   # rank 0's (also its step)
    if latest and dist.is_chief:
        print(f"resumed from {latest} at step {int(optimizer.iterations)}", flush=True)

    report = {"num_train_steps": num_train_steps, "num_warmup_steps": num_warmup_steps,
              "train_questions": len(train_examples), "train_features": len(train_features),
              "eval_questions": len(eval_examples), "eval_features": len(eval_features), "ranks": dist.size,
              "precision": FLAGS.precision, "train_loss": []}
    if FLAGS.eval_before_training and dist.is_chief:
        report["before"], _ = evaluate(model, eval_examples, eval_features, tokenizer, FLAGS.predict_file)
        print(f"before training: {squad_predictions.format_result(report['before'])}", flush=True)

    # The same shuffle (same seeds) on every rank; rank r takes features r, r + size, ... of it: together the
    # ranks' batches are the global batch one process would draw.
    dataset = (tf.data.Dataset.from_tensor_slices(feature_arrays(train_features, with_positions=True))
               .repeat().shuffle(SHUFFLE_BUFFER, seed=FLAGS.seed).shard(dist.size, dist.rank)
               .batch(per_rank_batch, drop_remainder=True))
    tf.random.set_seed(FLAGS.seed + dist.rank)          # dropout: each rank its own masks

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            logits = model(batch, training=True)
            loss = squad_model.squad_loss(logits, batch["start_positions"], batch["end_positions"])
            scaled = optimizer.get_scaled_loss(loss) if loss_scaled else loss
        # the pooler gets no gradient (run_squad.py does not use it); the reference skips it, so do we
        pairs = [(g, v) for g, v in zip(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
                 if g is not None]
        grads = [g for g, _ in pairs]
        if loss_scaled:
            grads = optimizer.get_unscaled_gradients(grads)
        # mean over the ranks = the gradient of the global batch; clipped after it, as one process clips
        grads = squad_optimizer.clip(dist.allreduce_gradients(grads))
        learning_rate = optimizer.learning_rate
        optimizer.apply_gradients(zip(grads, [v for _, v in pairs]))
        return loss, learning_rate

    started, step = time.time(), int(optimizer.iterations)
    batches = iter(dataset)
    while step < num_train_steps:
        loss, learning_rate = train_step(next(batches))
        step += 1
        if step % FLAGS.log_every_steps == 0 or step == num_train_steps or step == 1:
            loss = float(dist.allreduce_sum(np.array([float(loss)]))[0]) / dist.size   # the global batch's
            if not np.isfinite(loss):
                raise UserError("training", f"loss is {loss} at step {step}: lower --learning_rate")
            report["train_loss"].append([step, loss])
            if dist.is_chief:
                print(f"step {step}/{num_train_steps} loss {loss:.4f} lr {float(learning_rate):.3g} "
                      f"({time.time() - started:.0f} s)", flush=True)
        if manager and step % FLAGS.save_checkpoints_steps == 0 and step < num_train_steps:
            manager.save(checkpoint_number=step)
    if not dist.is_chief:
        return report
    saved = manager.save(checkpoint_number=step)

    report["after"], answers = evaluate(model, eval_examples, eval_features, tokenizer, FLAGS.predict_file)
    report["checkpoint"] = saved
    with open(os.path.join(FLAGS.model_dir, "predictions.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(answers, indent=4, ensure_ascii=False) + "\n")
    with open(os.path.join(FLAGS.model_dir, "squad_eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"after training: {squad_predictions.format_result(report['after'])} on {FLAGS.predict_file} "
          f"({len(eval_examples)} questions); checkpoint {saved}", flush=True)
    return report


def main() -> None:
    if any(a in ("--help", "-h", "-help", "--helpshort", "-?") for a in sys.argv[1:]):
        module = sys.argv[0] if __name__ == "__main__" else __name__     # where absl registered the flags
        print(f"{__doc__.strip()}\n\nFlags:\n{FLAGS.module_help(module).split(chr(10), 1)[-1]}\n\n"
              "Presets: flags/bert/squad.cfg (BERT-large, run_squad.py's recipe), flags/bert/squad_smoke_cpu.cfg")
        sys.exit(0)

    def _run(argv):
        if len(argv) > 1:
            raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
        sys.exit(run_cli("tf-mlperf-squad", lambda: train() and 0, verbose=FLAGS.verbose))
    absl_app.run(_run)


if __name__ == "__main__":
    main()
