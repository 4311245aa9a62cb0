import re

import pytest

from srcore.config import load_params
from srcore.errors import SrcoreError

from conftest import REPO, run_cli, write_params


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "sample" and params.data.scale == 4
    assert (params.split.train, params.split.val, params.split.test) == (700, 101, 102)


@pytest.mark.parametrize("key, value, expected", [
    ("data__sorce", "x", "data.sorce: unknown key"),
    ("data__scale", 3, "data.scale = 3"),
    ("data__hr_max_side", "big", "data.hr_max_side = 'big'"),
    ("data__source", "imagenet", "data.source = 'imagenet'"),
    ("data__lq_kernel", "lanczos", "data.lq_kernel = 'lanczos'"),
    ("data__lr_kernel", "area", "data.lr_kernel: renamed, now data.lq_kernel"),
    ("cnn__epochs", 200, "cnn.epochs: renamed, now cnn.steps"),
    ("gan__perceptual__layer", "conv5_3", "gan.perceptual.layer: renamed, now gan.perceptual.layers"),
    ("gan__perceptual__layers", ["conv1_2", "conv2_2", "conv3_4", "conv4_3", "conv5_3"],
     "vgg16 has no conv3_4"),
    ("gan__perceptual__layers", ["conv6_1"] * 5, "gan.perceptual.layers.0 = 'conv6_1'"),
    ("gan__perceptual__layer_weights", [1.0, 1.0], "has 2 values for 5 gan.perceptual.layers"),
    ("gan__perceptual__criterion", "huber", "gan.perceptual.criterion = 'huber'"),
    ("data__patch_size", 66, "must be divisible by data.scale"),
    # the discriminator's four stride-2 convs need at least 16 pixels (12 -> 6 -> 3 -> 1 -> none)
    ("data__patch_size", 12, "data.patch_size=12 is below 16"),
    ("data__patch_size", 8, "data.patch_size=8 is below 16"),
    ("split__val", 0, "split.val = 0"),
    ("seed", -1, "seed = -1"),
    ("seed", 2**70, f"seed = {2**70}: Input should be less than or equal to 4294967295"),
    ("seed", True, "seed = True: Input should be a valid integer"),
    ("data__patch_size", 1024, "data.patch_size=1024 is larger than data.hr_max_side=1020"),
    ("train__nproc", 0, "train.nproc = 0"),
    ("train__nproc", 3, "cnn.batch_size=16 and gan.batch_size=16: each is the global batch, "
                        "shared by train.nproc=3 processes"),
    ("train__precision", "fp8", "train.precision = 'fp8'"),
    ("cnn__lr_halve_at", 4375, "cnn.lr_halve_at = 4375: Input should be a valid list; write a "
                               "list in brackets, quoted for the shell: -S 'cnn.lr_halve_at=[...]'"),
    ("gan__betas", 0.5, "gan.betas = 0.5: Input should be a valid tuple; write a list"),
    ("train__num_workers", 5000, "train.num_workers = 5000: use auto or a whole "
                                 "number from 0 to 1024"),
])
def test_bad_params_name_the_key(tmp_path, key, value, expected):
    path = write_params(tmp_path, **{key: value})
    with pytest.raises(SrcoreError) as err:
        load_params(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("value, expected", [
    ("", "data.dir is empty: it must name a folder"),
    (None, "data.dir"),
    ("~/photos", "data.dir='~/photos' starts with ~, which DVC does not expand"),
])
def test_data_dir_must_be_a_path_dvc_can_read_whatever_the_source(tmp_path, value, expected):
    """dvc.yaml makes data.dir a dependency of download, so it matters for every source."""
    for source in ("sample", "dir"):
        with pytest.raises(SrcoreError, match=re.escape(expected)):
            load_params(write_params(tmp_path, data__source=source, data__dir=value))


def test_missing_and_broken_params_file(tmp_path):
    with pytest.raises(SrcoreError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(SrcoreError, match="not valid YAML"):
        load_params(bad)


def test_a_params_file_not_in_utf8_is_named_without_a_traceback(project):
    (project / "params.yaml").write_bytes(b"seed: 42 # caf\xe9\n")
    result = run_cli("check-params", cwd=project, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "params.yaml: not UTF-8 text (byte 0xe9 at offset 14); save it as UTF-8" in result.stderr


@pytest.mark.parametrize("old, new, expected", [
    ("  experiment: srcore\n", "  experiment: srcore\ncnn:\n  steps: 5\n",
     "cnn defined twice (lines 46 and 112)"),
    ("  steps: 400 ", "  steps: 400\n  steps: 300 ", "cnn.steps defined twice (lines 48 and 49)"),
    ("    criterion: l1", "    criterion: l1\n    net: vgg19",
     "gan.perceptual.net defined twice (lines 86 and 102)"),
])
def test_a_key_given_twice_is_refused(tmp_path, old, new, expected):
    """PyYAML would keep the last silently (and a second section would hide the first)."""
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    with pytest.raises(SrcoreError) as err:
        load_params(path)
    assert f"{path}: {expected}" in str(err.value)


@pytest.mark.parametrize("loss, weights", [
    ("dual", {"perceptual": 0, "adversarial": 0, "l1": 0}),
    ("dual", {"perceptual": 0, "adversarial": 0, "l1": 1.0}),  # dual does not use l1
    ("triad", {"perceptual": 0, "adversarial": 0, "l1": 0}),
])
def test_gan_weights_all_zero_are_refused(tmp_path, loss, weights):
    with pytest.raises(SrcoreError) as err:
        load_params(write_params(tmp_path, gan__loss=loss, gan__weights=weights))
    assert f"gan.weights of the {loss} loss" in str(err.value) and "are all 0" in str(err.value)


def test_limits_that_are_still_accepted(tmp_path):
    triad_l1_only = {"perceptual": 0, "adversarial": 0, "l1": 1.0}
    params = load_params(write_params(tmp_path, gan__loss="triad", gan__weights=triad_l1_only,
                                      data__patch_size=128, data__hr_max_side=128,
                                      seed=2**32 - 1, model__features=1024,
                                      train__num_workers=1024))
    assert params.seed == 2**32 - 1 and params.data.patch_size == params.data.hr_max_side


def test_missing_key_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("  patch_size: 64", "  #"))
    with pytest.raises(SrcoreError, match="data.patch_size: missing"):
        load_params(path)


@pytest.mark.parametrize("key, value, expected", [
    ("gan__loss", "quad", "gan.loss = 'quad'"),
    ("cnn__betas", [0.9, 1.5], "each must be in [0, 1)"),
    ("cnn__betas", [0.9], "cnn.betas = [0.9]: needs two values"),
    ("gan__betas", [0.9, 0.99, 0.999], "gan.betas = [0.9, 0.99, 0.999]: needs two values"),
    ("model__features", 6400, "model.features = 6400"),
    ("model__growth", 3200, "model.growth = 3200"),
    ("disc__widths", [64, 128], "disc.widths"),
    ("model__rrdb", 0, "model.rrdb = 0"),
    ("cnn__lr", 0, "cnn.lr = 0"),
    ("cnn__batch_size", 10**8, "cnn.batch_size = 100000000: Input should be less than or equal "
                               "to 4096"),
    ("gan__batch_size", 4097, "gan.batch_size = 4097"),
    ("cnn__lr_halve_at", [300, 200, 300], "cnn.lr_halve_at lists step 300 more than once"),
    ("data__patches_per_image", 10**8, "data.patches_per_image = 100000000"),
])
def test_bad_training_params(tmp_path, key, value, expected):
    with pytest.raises(SrcoreError) as err:
        load_params(write_params(tmp_path, **{key: value}))
    assert expected in str(err.value)


@pytest.mark.parametrize("key, value, expected", [
    ("cnn__val_every", 401, "cnn.val_every=401 is longer than its run (cnn.steps = 400)"),
    ("cnn__patience", 500, "cnn.patience=500 is longer than its run"),
    ("cnn__early_stop_warmup", 400, "cnn.early_stop_warmup=400 must be below cnn.steps=400"),
    ("cnn__lr_halve_at", [100, 450], "cnn.lr_halve_at: step 450 is outside the run"),
    ("gan__val_every", 300, "gan.val_every=300 is longer than its run (the GAN's steps = 200)"),
    ("train__log_every", 60, "train.log_every=60 is longer than its run "
                             "(disc.pretrain_steps = 50)"),
    ("train__checkpoint_every", 401, "train.checkpoint_every=401 is longer than its run "
                                     "(cnn.steps = 400)"),
    ("train__ema_decay", 1.0, "train.ema_decay = 1.0"),
    ("train__ema_decay", 0, "train.ema_decay = 0"),
])
def test_cadences_warmup_and_ema_decay_are_checked(tmp_path, key, value, expected):
    with pytest.raises(SrcoreError) as err:
        load_params(write_params(tmp_path, **{key: value}))
    assert expected in str(err.value)
    assert "{" not in str(err.value)  # the message, not a dump of the section


def test_gan_steps_follow_the_schedule(tmp_path):
    params = load_params(write_params(tmp_path, gan__g_steps=30, gan__d_steps=20))
    assert params.gan.steps == 2 * (30 + 20)
    joint = load_params(write_params(tmp_path, gan__g_steps=30, gan__schedule="joint"))
    assert joint.gan.steps == 2 * 30


def test_dvc_exp_run_changes_only_the_params_it_sets(tmp_path):
    """`dvc exp run -S` rewrites params.yaml in its own layout; ours is that layout already,
    so an experiment's diff of params.yaml is the lines it set, nothing else."""
    import os
    import subprocess
    import sys

    original = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(original)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  touch:\n    cmd: python -c \"open('out.txt', 'w').write('x')\"\n"
        "    params: [cnn.loss, cnn.lr_halve_at]\n    outs: [out.txt]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com",
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))

    def sh(*args):
        subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "x")
    sh(sys.executable, "-m", "dvc", "exp", "run", "-q", "-S", "cnn.loss=l2",
       "-S", "cnn.lr_halve_at=[250]")
    changed = [(a, b) for a, b in zip(original.splitlines(),
                                      (tmp_path / "params.yaml").read_text().splitlines())
               if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["loss: l2", "- 250"]
    assert len((tmp_path / "params.yaml").read_text().splitlines()) == len(original.splitlines())


def test_dvc_can_set_every_param_to_an_empty_list_or_another_value(tmp_path):
    """`-S key=[]` once made DVC write a params.yaml that no YAML parser reads (a list with its
    comment beside the key). Every key, through the function `dvc exp run -S` calls, must
    change only that key and leave a loadable file."""
    import copy

    import yaml
    from dvc.utils.hydra import apply_overrides

    original = yaml.safe_load((REPO / "params.yaml").read_text())

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for key, value in leaves(original):
        new_values = ([[], [7], [7, 8]] if isinstance(value, list)
                      else ["x"] if isinstance(value, str) else [7])
        for new in new_values:
            path = tmp_path / "params.yaml"
            path.write_text((REPO / "params.yaml").read_text())
            text = str(new).replace(" ", "").replace("'", "")
            apply_overrides(path, [f"{key}={text}"])
            expected = copy.deepcopy(original)
            *parents, last = key.split(".")
            node = expected
            for parent in parents:
                node = node[parent]
            node[last] = new
            assert yaml.safe_load(path.read_text()) == expected, f"-S {key}={text}"


def test_check_params_stage_refuses_a_bad_value_and_keeps_its_output(project):
    """The first stage of dvc.yaml: its output is the same bytes for any valid params.yaml, and
    a bad one fails, naming the key, without touching it."""
    out = project / "data/params_checked.txt"
    run_cli("check-params", cwd=project)
    first = out.read_bytes()
    write_params(project, cnn__lr=0.25)
    run_cli("check-params", cwd=project)
    assert out.read_bytes() == first  # nothing downstream re-runs for a valid change
    write_params(project, cnn__lr=-1)
    result = run_cli("check-params", cwd=project, check=False)
    assert result.returncode == 2 and "cnn.lr" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == first


@pytest.mark.parametrize("where", ["unknown key", "wrong type"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, where):
    """Nine levels of aliases ten wide stand for 10^9 strings in a file of 1 KB: walking or
    printing them expanded would hang (and fill memory); the key is named at once."""
    import signal

    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    if where == "unknown key":
        text += "\nbomb:\n" + "".join(f"  {line}\n" for line in lines)
    else:
        text = text.replace("seed: 42", "seed: &l9 [" + ",".join(["*l8"] * 10) + "]")
        text = "defs:\n" + "".join(f"  {line}\n" for line in lines) + text
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    def hung(signum, frame):  # a guard against a hang (as before the fix), not a speed test
        raise TimeoutError("load_params still walking the aliases after 120 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(SrcoreError, match="bomb: unknown key" if where == "unknown key"
                           else r"seed = \[\[\[.*\.\.\.\]: Input should be a valid integer"):
            load_params(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
