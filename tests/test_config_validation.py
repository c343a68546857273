"""`birnn.config.validate`: a bad value fails before any data is read, with one line naming
its full key and what it must be; the shipped configs and a few good variants pass."""

import subprocess
import sys

import pytest
from conftest import ROOT, make_config
from omegaconf import open_dict

from birnn.cli.app import EXIT_USER_ERROR, user_errors_exit
from birnn.cli.train import train
from birnn.config import validate
from birnn.errors import ConfigError

BAD = [
    # (overrides, key the message must start with)
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=2.5"], "data.batch_size"),
    (["data.batch_size=true"], "data.batch_size"),  # booleans are not integers
    (["data.batch_size='32'"], "data.batch_size"),  # nor are strings
    (["data.eval_batch_size=-3"], "data.eval_batch_size"),
    (["data.min_freq=0"], "data.min_freq"),
    (["data.max_length=0"], "data.max_length"),
    (["data.max_length=ten"], "data.max_length"),
    (["task=classification", "data.validation_fraction=1.0"], "data.validation_fraction"),
    (["data.num_workers=-1"], "data.num_workers"),
    (["data.format=xml"], "data.format"),
    (["data.scheme=bilou"], "data.scheme"),
    (["data.unknown_labels=ignore"], "data.unknown_labels"),
    (["data.lowercase=maybe"], "data.lowercase"),
    (["data.chars=2"], "data.chars"),
    (["+data.files.dev=dev.txt"], "data.files.dev"),
    (["+data.batchsize=8"], "data.batchsize"),
    (["data=conll2003", "+data.hub.nme=y"], "data.hub.nme"),
    (["data._target_=birnn.data.Nowhere"], "data._target_"),
    (["data._target_=birnn.models.TokenTagger"], "data._target_"),
    (["model.embedding_dim=0"], "model.embedding_dim"),
    (["model.embedding_dim=false"], "model.embedding_dim"),
    (["model.dropout=1.0"], "model.dropout"),
    (["model.dropout=-0.1"], "model.dropout"),
    (["model.word_dropout=1"], "model.word_dropout"),
    (["model.rare_word_dropout=-0.5"], "model.rare_word_dropout"),
    (["model.head=mlp"], "model.head"),
    (["model.constrained=1"], "model.constrained"),
    (["model.char.kind=lstm"], "model.char.kind"),
    (["model.char.filters=0"], "model.char.filters"),
    (["+model.char.width=3"], "model.char.width"),
    (["model.casing_dim=0"], "model.casing_dim"),
    (["model.optimizer.lr=0"], "model.optimizer.lr"),
    (["model.optimizer.lr=nan"], "model.optimizer.lr"),
    (["model.optimizer.lr=fast"], "model.optimizer.lr"),
    (["model.optimizer.weight_decay=-1e-4"], "model.optimizer.weight_decay"),
    (["model.optimizer.fused=yes"], "model.optimizer.fused"),
    (["model.optimizer._target_=torch.optim.RMSpro"], "model.optimizer._target_"),
    (["model.optimizer._target_=torch.nn.Linear"], "model.optimizer._target_"),
    (["model.optimizer._partial_=false"], "model.optimizer._partial_"),
    (["+model.optimizer.momentum=0.9"], "model.optimizer.momentum"),  # AdamW has none
    (["model/optimizer=sgd", "model.optimizer.momentum=-1"], "model.optimizer.momentum"),
    (["task=classification", "model.pooling=sum"], "model.pooling"),
    (["model.dropout_kind=lockd"], "model.dropout_kind"),
    (["model.embedding_dropout=1.0"], "model.embedding_dropout"),
    (["model.embedding_dropout=much"], "model.embedding_dropout"),
    (["model.embedding_dropout=-0.1"], "model.embedding_dropout"),
    (["model.embedding_dropout='0.2'"], "model.embedding_dropout"),
    (["model.embeddings.freeze=maybe"], "model.embeddings.freeze"),
    (["+model.embeddings.path=x"], "model.embeddings.path"),
    (["model/scheduler=plateau", "model.scheduler.factor=1.0"], "model.scheduler.factor"),
    (["model/scheduler=plateau", "model.scheduler.factor=0"], "model.scheduler.factor"),
    (["model/scheduler=plateau", "model.scheduler.patience=1.5"], "model.scheduler.patience"),
    (["model/scheduler=plateau", "model.scheduler.mode=maximum"], "model.scheduler.mode"),
    (["model/scheduler=plateau", "+model.scheduler.warmup_steps=2"],
     "model.scheduler.warmup_steps"),  # not an argument of ReduceLROnPlateau
    (["model/scheduler=cosine", "model.scheduler.warmup_steps=-1"],
     "model.scheduler.warmup_steps"),
    (["model/scheduler=cosine", "model.scheduler.min_lr=-0.1"], "model.scheduler.min_lr"),
    (["model/scheduler=cosine", "model.scheduler.shape=step"], "model.scheduler.shape"),
    (["model/scheduler=linear", "+model.scheduler.interval=batch"],
     "model.scheduler.interval"),
    (["+model.bogus=1"], "model.bogus"),
    (["encoder.hidden_size=0"], "encoder.hidden_size"),
    (["encoder.hidden_size=[64,0]"], "encoder.hidden_size"),
    (["encoder.hidden_size=[]"], "encoder.hidden_size"),
    (["encoder.hidden_size=true"], "encoder.hidden_size"),
    (["encoder.num_layers=0"], "encoder.num_layers"),
    (["encoder.num_layers=1.5"], "encoder.num_layers"),
    (["encoder.dropout=1"], "encoder.dropout"),
    (["encoder.dropout=true"], "encoder.dropout"),
    (["encoder.cell=transformer"], "encoder.cell"),
    (["encoder.merge=concatenate"], "encoder.merge"),
    (["encoder.impl=cudnn"], "encoder.impl"),
    (["encoder.ragged=sort"], "encoder.ragged"),
    (["encoder.gru=fast"], "encoder.gru"),
    (["encoder.cell=gru", "encoder.gru=birnn", "encoder.ragged=pack"], "encoder.gru"),
    (["encoder.directions=parallel"], "encoder.directions"),
    (["encoder.directions=concurrent", "encoder.ragged=pack"], "encoder.directions"),
    (["encoder.hidden_size=[8,8,8]", "encoder.num_layers=2"], "encoder.hidden_size"),
    (["encoder.merge=[none,concat]"], "encoder.merge"),
    (["encoder.impl=fused", "encoder.merge=sum"], "encoder.impl"),
    (["encoder.residual=yes"], "encoder.residual"),
    (["encoder.residual=true", "encoder.num_layers=1"], "encoder.residual"),
    (["encoder.dropout_kind=variational"], "encoder.dropout_kind"),
    (["encoder.init=xavier"], "encoder.init"),
    (["encoder.forget_bias=high"], "encoder.forget_bias"),
    (["encoder.forget_bias=nan"], "encoder.forget_bias"),
    (["+encoder.bidirectional=true"], "encoder.bidirectional"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["trainer.max_epochs=-2"], "trainer.max_epochs"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val"),
    (["trainer.precision=8"], "trainer.precision"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch"),  # not a Trainer argument
    (["trainer._target_=torch.nn.Linear"], "trainer._target_"),
    (["callbacks=ema", "callbacks.ema.decay=1"], "callbacks.ema.decay"),
    (["callbacks=ema", "callbacks.ema.start_step=-1"], "callbacks.ema.start_step"),
    (["callbacks.early_stopping.patience=-1"], "callbacks.early_stopping.patience"),
    (["+callbacks.early_stopping.patiance=3"], "callbacks.early_stopping.patiance"),
    (["callbacks.checkpoint.every_n_train_steps=0"], "callbacks.checkpoint.every_n_train_steps"),
    (["+callbacks.extra={_target_:birnn.Nothing}"], "callbacks.extra._target_"),
    (["logger=csv", "+logger.csv.flush=1"], "logger.csv.flush"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed"),
    (["seed=1.5"], "seed"),
    (["seed=4294967296"], "seed"),
    (["resume=yes"], "resume"),
    (["monitor_mode=maximum"], "monitor_mode"),
    (["+epochs=3"], "epochs"),
    # data or model that does not fit the task
    (["data=sample_sentiment"], "data"),
    (["task=classification", "data=sample"], "data"),
    (["task=classification", "model=tagger"], "model"),
]

GOOD = [
    [],
    ["task=classification"],
    ["task=classification", "model.pooling=attention", "data.max_length=50"],
    ["task=classification", "data=sst2"],
    ["task=classification", "data=imdb"],
    ["task=classification", "data=sentences", "data.dir=/somewhere"],
    ["data=conll", "data.dir=/somewhere"],
    ["data=conll2003"],  # a Hub config: nothing is loaded to validate it
    ["data=wnut17"],
    ["experiment=conll2003"],
    ["experiment=sst2"],
    ["experiment=conll2003_robust"],
    ["experiment=conll2003_glove"],  # the vectors are read when training starts, not here
    ["experiment=sst2_glove"],
    ["encoder.hidden_size=[64,32]", "encoder.cell=[gru,lstm]", "encoder.merge=[sum,none]"],
    ["encoder.hidden_size=[16,16,16]", "encoder.num_layers=3", "encoder.dropout=0"],
    ["encoder.num_layers=null", "encoder.hidden_size=[8,8]"],
    ["model/optimizer=sgd", "model.optimizer.lr=1", "model.optimizer.momentum=0.9"],
    ["model/optimizer=adam", "+model.optimizer.betas=[0.8,0.9]"],
    ["model/scheduler=plateau"],
    ["model/scheduler=cosine", "model.scheduler.warmup_steps=10"],
    ["model/scheduler=linear"],
    ["model/scheduler=constant"],
    ["model.char.kind=cnn", "model.casing=true", "model.head=crf"],
    ["trainer.max_epochs=-1", "trainer.gradient_clip_val=null", "trainer.gradient_clip_val=0"],
    ["trainer=gpu", "seed=0", "model.dropout=0", "data.min_freq=2"],
    ["trainer=cpu"],
    ["trainer=ddp"],
    ["+trainer.val_check_interval=0.25", "+trainer.limit_train_batches=10"],
    ["callbacks=ema"],
    ["logger=csv"],
    ["logger=tensorboard"],
    ["logger=wandb"],
    ["debug=fast_dev_run"],
    ["debug=overfit"],
    ["debug=limit"],
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_names_its_key(tmp_path, overrides, key):
    cfg = make_config(tmp_path, *overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message


def test_message_says_what_and_got(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.batch_size: must be an integer >= 1, got 0$"):
        validate(make_config(tmp_path, "data.batch_size=0"))


def test_unknown_key_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        validate(make_config(tmp_path, "+data.batchsize=8"))
    valid = str(info.value).split("(valid: ")[1].rstrip(")").split(", ")
    assert {"batch_size", "eval_batch_size", "scheme", "_target_"} <= set(valid)
    assert "batchsize" not in valid


def test_unknown_optimizer_argument_lists_the_class_arguments(tmp_path):
    import inspect

    import torch

    with pytest.raises(ConfigError) as info:
        validate(make_config(tmp_path, "+model.optimizer.momentum=0.9"))
    valid = set(str(info.value).split("(valid: ")[1].rstrip(")").split(", "))
    assert valid == set(inspect.signature(torch.optim.AdamW).parameters) - {"params"}


def test_task_mismatch_says_which_task(tmp_path):
    with pytest.raises(ConfigError, match=r"^data: .*ClassificationDataModule.*task=tagging.*"
                                          r"task=classification"):
        validate(make_config(tmp_path, "data=sample_sentiment"))


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) or "default" for o in GOOD])
def test_good_configs_pass(tmp_path, overrides):
    validate(make_config(tmp_path, *overrides))


def test_task_chooses_model_data_and_monitor(tmp_path):
    tagging, classification = make_config(tmp_path), make_config(tmp_path, "task=classification")
    assert (tagging.model._target_, tagging.data._target_, tagging.monitor) == (
        "birnn.models.TokenTagger", "birnn.data.TaggingDataModule", "val/f1")
    assert (classification.model._target_, classification.data._target_,
            classification.monitor) == ("birnn.models.SentenceClassifier",
                                        "birnn.data.ClassificationDataModule", "val/acc")
    # the monitor is interpolated, not copied: the callbacks follow the task's
    assert classification.callbacks.best.monitor == "val/acc"
    assert make_config(tmp_path, "experiment=sst2").monitor == "val/acc"


@pytest.mark.parametrize("group", ["data", "model", "encoder", "trainer", "task"])
def test_a_missing_group_is_named(tmp_path, group):
    cfg = make_config(tmp_path)
    with open_dict(cfg):
        del cfg[group]
    with pytest.raises(ConfigError, match=rf"^{group}: required"):
        validate(cfg)


def test_unknown_task(tmp_path):
    cfg = make_config(tmp_path)
    cfg.task = "ner"  # a task group without its config (a config written by hand)
    with pytest.raises(ConfigError, match=r"^task: must be one of tagging, classification, "
                                          r"got 'ner'$"):
        validate(cfg)


def test_hydra_keys_are_allowed(tmp_path):
    validate(make_config(tmp_path, "+data._convert_=all", "+trainer._recursive_=false"))


def test_reads_no_data(tmp_path):
    # a data folder that does not exist: validation never looks at it
    validate(make_config(tmp_path, f"data.dir={tmp_path / 'nowhere'}"))


def test_huge_encoder_is_checked_without_allocating(tmp_path):
    # 10^6 hidden units would be terabytes of weights: the schema builds nothing
    validate(make_config(tmp_path, "encoder.hidden_size=1000000"))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["encoder.cell=transformer"], "encoder.cell"),
        (["data.batch_size=0"], "data.batch_size"),
        # checked before the (missing) data folder is looked at
        (["model.optimizer.lr=0", "data.dir=/nonexistent/birnn-data"], "model.optimizer.lr"),
        (["data=sample_sentiment"], "data"),
        (["data=conll"], "data.dir"),  # `???`: required
        # read once the vocabulary is known, still before training
        (["model.embeddings.pretrained=/nonexistent/vectors.txt"], "model.embeddings.pretrained"),
    ],
)
def test_train_exits_2_with_the_key(tmp_path, capsys, overrides, key):
    """Through the command-line wrapper: one line on stderr, exit status 2, before any data."""
    cfg = make_config(tmp_path, *overrides)
    with pytest.raises(SystemExit) as info:
        user_errors_exit(train)(cfg)
    assert info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"error: {key}"), err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["data.batch_size=0"], "error: data.batch_size: must be an integer >= 1, got 0"),
    (["task=classification", "model=tagger"],
     "error: model: birnn.models.TokenTagger is for tagging, but task=classification"),
])
def test_the_command_line_exits_2_with_one_line(tmp_path, args, expected):
    """The real `python train.py bad.key=...`: exit status 2 and one line on stderr."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, "logger=none",
         f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_MODE": "offline",
             "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "BIRNN_ROOT": str(ROOT)})
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_evaluate_checks_its_data_section(tmp_path):
    """`evaluate.py` reads a data section without the rest of a training config: the same
    schema checks it before any file is read."""
    from birnn.cli.evaluate import datamodule_with_vocabularies

    data = make_config(tmp_path, "data.batch_size=0", f"data.dir={tmp_path / 'nowhere'}").data
    with pytest.raises(ConfigError, match=r"^data\.batch_size: must be an integer >= 1"):
        datamodule_with_vocabularies(data, {})


@pytest.mark.parametrize("bf16_kernels", [True, False])
def test_bf16_on_cpu_is_refused_only_without_onednn_bf16_kernels(cfg_factory, monkeypatch,
                                                                 bf16_kernels):
    """PyTorch's LSTM fails under bf16 autocast on a CPU without oneDNN's bf16 kernels: the
    check stops such a run up front; bf16 on GPU and fp32 on CPU are not its business."""
    import birnn.hardware

    monkeypatch.setattr(birnn.hardware, "cpu_supports_bf16", lambda: bf16_kernels)
    validate(cfg_factory("trainer.precision=32-true"))
    validate(cfg_factory("trainer.precision=bf16-mixed", "trainer.accelerator=gpu"))
    bf16_cpu = cfg_factory("trainer.precision=bf16-mixed")
    if bf16_kernels:
        validate(bf16_cpu)
    else:
        with pytest.raises(ConfigError, match=r"^trainer\.precision: bf16-mixed on CPU: .* "
                                              r"use 32-true$"):
            validate(bf16_cpu)
