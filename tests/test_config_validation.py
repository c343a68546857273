"""`birnn.cli.validate.validate_config`: a bad value fails before any data is read, naming
its full key; the shipped configs and a few good variants pass."""

import pytest
from conftest import make_config
from omegaconf import open_dict

from birnn.cli.app import EXIT_USER_ERROR, user_errors_exit
from birnn.cli.train import train
from birnn.cli.validate import validate_config
from birnn.errors import ConfigError

BAD = [
    # (overrides, key the message must start with)
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=2.5"], "data.batch_size"),
    (["data.batch_size=true"], "data.batch_size"),  # booleans are not integers
    (["data.eval_batch_size=-3"], "data.eval_batch_size"),
    (["data.min_freq=0"], "data.min_freq"),
    (["data.max_length=0"], "data.max_length"),
    (["data.max_length=ten"], "data.max_length"),
    (["data=sample_sentiment", "data.validation_fraction=1.0"], "data.validation_fraction"),
    (["data.num_workers=-1"], "data.num_workers"),
    (["data.format=xml"], "data.format"),
    (["data.scheme=bilou"], "data.scheme"),
    (["data.unknown_labels=ignore"], "data.unknown_labels"),
    (["data.lowercase=maybe"], "data.lowercase"),
    (["model.embedding_dim=0"], "model.embedding_dim"),
    (["model.embedding_dim=false"], "model.embedding_dim"),
    (["model.dropout=1.0"], "model.dropout"),
    (["model.dropout=-0.1"], "model.dropout"),
    (["model.optimizer.lr=0"], "model.optimizer.lr"),
    (["model.optimizer.lr=nan"], "model.optimizer.lr"),
    (["model.optimizer.lr=fast"], "model.optimizer.lr"),
    (["model.optimizer.weight_decay=-1e-4"], "model.optimizer.weight_decay"),
    (["model.optimizer.name=rmsprop"], "model.optimizer.name"),
    (["data=sample_sentiment", "model.pooling=sum"], "model.pooling"),
    (["encoder.hidden_size=0"], "encoder.hidden_size"),
    (["encoder.hidden_size=[64,0]"], "encoder.hidden_size"),
    (["encoder.hidden_size=[]"], "encoder.hidden_size"),
    (["encoder.hidden_size=true"], "encoder.hidden_size"),
    (["encoder.num_layers=0"], "encoder.num_layers"),
    (["encoder.num_layers=1.5"], "encoder.num_layers"),
    (["encoder.dropout=1"], "encoder.dropout"),
    (["encoder.dropout=true"], "encoder.dropout"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["trainer.max_epochs=-2"], "trainer.max_epochs"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed"),
    (["seed=1.5"], "seed"),
    (["resume=yes"], "resume"),
    # the encoder's own checks, through the one call
    (["encoder.cell=transformer"], "encoder.cell"),
    (["encoder.merge=concatenate"], "encoder.merge"),
    (["encoder.impl=cudnn"], "encoder.impl"),
    (["encoder.ragged=sort"], "encoder.ragged"),
    (["encoder.gru=fast"], "encoder.gru"),
    (["encoder.cell=gru", "encoder.gru=birnn", "encoder.ragged=pack"], "encoder.gru"),
    (["encoder.directions=parallel"], "encoder.directions"),
    (["encoder.directions=concurrent", "encoder.ragged=pack"], "encoder.directions"),
    (["model.optimizer.fused=yes"], "model.optimizer.fused"),
    (["encoder.hidden_size=[8,8,8]", "encoder.num_layers=2"], "encoder.hidden_size"),
    (["encoder.merge=[none,concat]"], "encoder.merge"),
    (["encoder.impl=fused", "encoder.merge=sum"], "encoder.impl"),
    (["+encoder.bidirectional=true"], "encoder"),
]

GOOD = [
    [],
    ["data=sample_sentiment"],
    ["data=sample_sentiment", "model.pooling=attention", "data.max_length=50"],
    ["encoder.hidden_size=[64,32]", "encoder.cell=[gru,lstm]", "encoder.merge=[sum,none]"],
    ["encoder.hidden_size=[16,16,16]", "encoder.num_layers=3", "encoder.dropout=0"],
    ["encoder.num_layers=null", "encoder.hidden_size=[8,8]"],
    ["model.optimizer.name=sgd", "model.optimizer.lr=1", "model.optimizer.momentum=0.9"],
    ["trainer.max_epochs=-1", "trainer.gradient_clip_val=null", "trainer.gradient_clip_val=0"],
    ["trainer=gpu", "seed=0", "model.dropout=0", "data.min_freq=2"],
    ["data=conll2003"],  # a Hub config: nothing is loaded to validate it
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_names_its_key(tmp_path, overrides, key):
    cfg = make_config(tmp_path, *overrides)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith(f"{key}:") or message.startswith(f"{key}."), message


def test_message_says_what_and_got(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.batch_size: must be an integer >= 1, got 0$"):
        validate_config(make_config(tmp_path, "data.batch_size=0"))


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) or "default" for o in GOOD])
def test_good_configs_pass(tmp_path, overrides):
    validate_config(make_config(tmp_path, *overrides))


def test_absent_keys_are_skipped(tmp_path):
    cfg = make_config(tmp_path)
    with open_dict(cfg):
        for group in ("data", "trainer", "model", "seed"):
            del cfg[group]
    validate_config(cfg)


def test_reads_no_data(tmp_path):
    # a data folder that does not exist: validation never looks at it
    validate_config(make_config(tmp_path, f"data.dir={tmp_path / 'nowhere'}"))


def test_huge_encoder_is_checked_without_allocating(tmp_path):
    # 10^6 hidden units would be terabytes of weights; the check builds on the meta device
    validate_config(make_config(tmp_path, "encoder.hidden_size=1000000"))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["encoder.cell=transformer"], "encoder.cell"),
        (["data.batch_size=0"], "data.batch_size"),
        # checked before the (missing) data folder is looked at
        (["model.optimizer.lr=0", "data.dir=/nonexistent/birnn-data"], "model.optimizer.lr"),
        (["model.dropout_kind=lockd"], "model.dropout_kind"),
        (["model.embedding_dropout=1.0"], "model.embedding_dropout"),
        (["model.embedding_dropout=-0.5"], "model.embedding_dropout"),
        (["model.embedding_dropout=much"], "model.embedding_dropout"),
        (["model.scheduler.name=step"], "model.scheduler.name"),
        (["model.scheduler.factor=1.0"], "model.scheduler.factor"),
        (["model.scheduler.factor=0"], "model.scheduler.factor"),
        (["model.scheduler.warmup_steps=-1"], "model.scheduler.warmup_steps"),
        (["model.scheduler.min_lr=-0.1"], "model.scheduler.min_lr"),
        (["model.scheduler.patience=1.5"], "model.scheduler.patience"),
        (["model.embeddings.freeze=maybe"], "model.embeddings.freeze"),
        (["encoder.residual=yes"], "encoder.residual"),
        (["encoder.residual=true", "encoder.num_layers=1"], "encoder.residual"),
        (["encoder.residual=true", "encoder.impl=fused"], "encoder.impl"),
        (["encoder.dropout_kind=variational"], "encoder.dropout_kind"),
        (["encoder.dropout_kind=locked", "encoder.impl=fused"], "encoder.impl"),
        (["encoder.init=xavier"], "encoder.init"),
        (["encoder.forget_bias=high"], "encoder.forget_bias"),
        (["encoder.forget_bias=true"], "encoder.forget_bias"),
        (["encoder.forget_bias=nan"], "encoder.forget_bias"),
        (["model.scheduler.name=plateau", "model.scheduler.mode=maximum"], "model.scheduler.mode"),
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
    assert err.startswith(f"error: {key}:"), err
    assert not (tmp_path / "metrics.json").exists()
