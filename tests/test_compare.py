"""`jaxconv compare`, `jaxconv report` and sweeps: published figures reproduced, runs read, plots written."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
from conftest import cached_summary
from tiny import tiny_config

from jaxconv import cli
from jaxconv.compare import ILSVRC_MODELS, RunError, compare_rows, find_runs, format_rows, load_run, published
from jaxconv.compare.report import write_report
from jaxconv.compare.runs import differing_keys, repeats
from jaxconv.train.config import ConfigError, load_config
from jaxconv.train.sweep import SweepError, plan, slurm_array

REPO = pathlib.Path(__file__).resolve().parents[1]
# One worker computes the module's fixtures (the ILSVRC rows, a tiny training run) once.
pytestmark = pytest.mark.xdist_group("compare")
PLAIN_VS_RESIDUAL = REPO / "experiments" / "study_plain_vs_residual.py"


def summarize(name, size):
    return cached_summary(name, image_size=size)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny) training run's workdir, with per-layer gradient norms logged."""
    from jaxconv.train.config import validate
    from jaxconv.train.loop import train

    root = tmp_path_factory.mktemp("compare")
    config = validate(tiny_config(root / "tfds", num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=4,
                                  log_layer_grad_norms=True), device_count=8)
    train(config, root / "runs" / "tiny", log=lambda _: None)
    return root / "runs" / "tiny"


def test_runs_are_read_from_workdirs_and_their_parents(tiny_run):
    run = load_run(tiny_run)
    assert run.model == "resnet20" and run.dataset == "shapes" and run.completed
    assert [r["step"] for r in run.evals] == [2, 4] and run.steps == 4
    assert run.best_eval["top1"] == max(r["top1"] for r in run.evals)
    assert [r.path for r in find_runs([tiny_run.parent])] == [tiny_run]
    with pytest.raises(RunError, match="holds no training run"):
        find_runs([tiny_run / "checkpoints"])


def test_per_layer_gradient_norms_are_logged_in_forward_order(tiny_run):
    """ResNet-8 (CIFAR shortcuts, no projections): the stem, two convolutions per block, the head."""
    for record in load_run(tiny_run).train:
        norms = record["layer_grad_norms"]
        assert list(norms) == ["stem/conv", "stage1/block0/conv1", "stage1/block0/conv2", "stage2/block0/conv1",
                               "stage2/block0/conv2", "stage3/block0/conv1", "stage3/block0/conv2", "head"]
        assert all(value > 0 for value in norms.values())
        # The kernels are part of the parameters whose global gradient norm is logged from the same step.
        kernels = sum(value**2 for value in norms.values()) ** 0.5
        assert 0 < kernels <= record["grad_norm"] * (1 + 1e-5)


def test_a_torn_last_line_is_ignored_but_damage_inside_is_not(tiny_run, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "config.json").write_text((tiny_run / "config.json").read_text())
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n" + lines[-1][:10])
    assert len(load_run(copy).evals) == 2
    (copy / "metrics.jsonl").write_text(lines[0][:10] + "\n" + "\n".join(lines))
    with pytest.raises(RunError, match="metrics.jsonl:1: not a JSON object"):
        load_run(copy)


def test_compare_fills_your_accuracy_from_runs_of_the_architecture_it_compares(tiny_run, tmp_path, capsys):
    """The tiny run trained resnet20 with depths (1, 1, 1): a ResNet-8, not the ResNet-20 of the row, which it
    used to fill. A run of the registered architecture fills it; the others are named with the reason."""
    from jaxconv.compare.table import uncompared_runs

    stock = tmp_path / "stock"
    stock.mkdir()
    config = json.loads((tiny_run / "config.json").read_text())
    (stock / "config.json").write_text(json.dumps({**config, "model_options": {}}))
    (stock / "metrics.jsonl").write_text((tiny_run / "metrics.jsonl").read_text())
    runs = find_runs([tiny_run, stock])
    rows = compare_rows(["resnet20", "plain20"], runs=runs, summarize=summarize)
    assert rows[0]["your_run"] == str(stock) and rows[1]["your_top1"] is None
    assert rows[0]["your_top1"] == pytest.approx(100 * runs[1].best_eval["top1"])
    assert "| shapes (at 16 px) |" in format_rows(rows, "md")  # the row's figures are at 32 px
    assert uncompared_runs(["resnet20", "plain20"], runs) == [
        f"{tiny_run}: trained resnet20 with model options (depths=[1, 1, 1]), another network than the resnet20 "
        f"compared; left out"]
    assert uncompared_runs(["alexnet"], runs[1:]) == [
        f"{stock}: a run of resnet20, which is not among the models compared (name it: jaxconv compare resnet20 ...)"]
    (stock / "metrics.jsonl").write_text('{"step": 2, "split": "eval", "loss": 1.0, "top1": 1.7}\n')
    assert cli.main(["compare", "resnet20", "--no-speed", "--runs", str(stock)]) == 0
    err = capsys.readouterr().err
    assert "1 record(s) without an integer step, or a train/eval record without a numeric loss and a top-1" in err
    assert f"{stock}: no evaluation yet; left out" in err


def test_report_writes_tables_and_plots(tiny_run, tmp_path):
    report = write_report(find_runs([tiny_run]), tmp_path / "report", title="tiny", command="jaxconv report x")
    text = report.read_text()
    assert "| tiny | resnet20 (depths=[1, 1, 1]) | shapes | 16 |" in text
    assert "![training curves](curves.png)" in text and "![accuracy vs GMACs](accuracy_vs_gmacs.png)" in text
    assert "![per-layer gradient norms](layer_grad_norms.png)" in text
    assert "| tiny | 8 |" in text  # first / last layer ratios at the first and last logged step
    for png in ("curves.png", "accuracy_vs_gmacs.png", "layer_grad_norms.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_name_models_start_their_axes_at_zero_and_draw_chance(tiny_run, tmp_path):
    from jaxconv.compare import plots

    assert [plots.millions(n) for n in (272_474, 4_200_000, 61_100_840, 138_357_544)] == ["0.27M", "4.2M", "61M", "138M"]
    import dataclasses

    runs = find_runs([tiny_run])
    assert plots.run_labels(runs) == ["resnet20"]
    twice = [runs[0], dataclasses.replace(runs[0], path=tmp_path / "other" / "tiny")]  # told apart by folder
    assert plots.run_labels(twice) == ["resnet20 (runs/tiny)", "resnet20 (other/tiny)"]
    figures = []
    original = plots._save
    plots._save = lambda fig, path: figures.append(fig) or original(fig, path)
    try:
        plots.plot_training_curves(runs[:1], tmp_path / "curves.png")
    finally:
        plots._save = original
    loss_ax, acc_ax, lr_ax = figures[0].axes
    assert acc_ax.get_ylim() == (0, 100) and loss_ax.get_ylim()[0] == 0 and lr_ax.get_ylim()[0] == 0
    assert any(line.get_label().startswith("chance (10%)") for line in acc_ax.get_lines())
    assert {line.get_label() for line in acc_ax.get_lines()} >= {"resnet20 train", "resnet20 eval"}


def test_seeds_of_a_setting_are_drawn_as_their_mean_and_range(tiny_run, tmp_path):
    """Three seeds, two at chance and one that learned: the curve is their mean and the band reaches both."""
    import dataclasses

    from jaxconv.compare import plots

    assert plots.seed_band([[{"step": 1, "top1": 0.1}, {"step": 2, "top1": 0.1}], [{"step": 1, "top1": 0.4}]],
                           "top1") == ([1, 2], [0.25, 0.1], [0.1, 0.1], [0.4, 0.1])
    # seeds logging every 2 and every 3 steps: only the steps both logged, not a line zig-zagging between subsets
    every2 = [{"step": s, "loss": 2.0} for s in (2, 4, 6)]
    every3 = [{"step": s, "loss": 1.0} for s in (3, 6)]
    assert plots.seed_band([every2, every3], "loss") == ([6], [1.5], [1.0], [2.0])
    run = find_runs([tiny_run])[0]
    seeds = [dataclasses.replace(run, path=tmp_path / f"seed{seed}", config=run.config | {"seed": seed},
                                 evals=tuple(r | {"top1": top1} for r in run.evals))
             for seed, top1 in ((0, 0.1), (1, 0.1), (2, 0.7))]
    figures = []
    original = plots._save
    plots._save = lambda fig, path: figures.append(fig) or original(fig, path)
    try:
        plots.plot_training_curves(seeds, tmp_path / "curves.png")
    finally:
        plots._save = original
    acc_ax = figures[0].axes[1]
    (evals,) = [line for line in acc_ax.get_lines() if line.get_label().endswith("eval")]
    assert "3 seeds" in evals.get_label()
    assert np.allclose(evals.get_ydata(), 30.0)  # (10 + 10 + 70) / 3
    bands = [c.get_paths()[0].vertices[:, 1] for c in acc_ax.collections]
    assert any(np.isclose(v.min(), 10.0) and np.isclose(v.max(), 70.0) for v in bands)
    from jaxconv.compare.runs import group_name

    named = [dataclasses.replace(run, path=tmp_path / f"dropout0.5_seed{run.config['seed']}") for run in seeds[1:]]
    assert group_name(named) == "dropout0.5" and group_name(named[:1]) == "dropout0.5_seed1"
    # one legend, outside the panels (none drawn over a curve), naming the setting once
    assert all(ax.get_legend() is None for ax in figures[0].axes)
    (legend,) = figures[0].legends
    assert sum("3 seeds" in text.get_text() for text in legend.get_texts()) == 1


def repeat_of(tiny_run, folder: pathlib.Path, *, seed: int, learning_rate: float, top1: float | None,
              **options) -> pathlib.Path:
    """A copy of the tiny run as if trained with another seed, rate and model options: final top-1 ``top1``,
    or diverged (None)."""
    folder.mkdir(parents=True)
    config = json.loads((tiny_run / "config.json").read_text()) | {"seed": seed, "learning_rate": learning_rate}
    config["model_options"] |= options
    if seed == 2:  # written by a jaxconv older than a key: the run had the key's default
        del config["auto_augment"]
    (folder / "config.json").write_text(json.dumps(config))
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    if top1 is None:  # diverged after step 2: nothing logged from then on
        records = [r for r in records if r["step"] <= 2]
    else:
        records = [r | {"top1": top1} if r["split"] == "eval" else r for r in records]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    status = {"status": "completed"} if top1 is not None else {"status": "diverged", "error": "NaN at step 3"}
    (folder / "summary.json").write_text(json.dumps(status))
    return folder


def test_report_gathers_seeds_with_their_spread_and_plots_final_values_against_a_key(tiny_run, tmp_path, capsys):
    for seed, top1 in enumerate((0.2, 0.3, 0.4)):
        repeat_of(tiny_run, tmp_path / "runs" / f"lr0.1_seed{seed}", seed=seed, learning_rate=0.1, top1=top1)
    repeat_of(tiny_run, tmp_path / "runs" / "lr1.0", seed=0, learning_rate=1.0, top1=None)
    repeat_of(tiny_run, tmp_path / "runs" / "lr0.1_nonorm", seed=0, learning_rate=0.1, top1=0.1, norm=None)
    runs = find_runs([tmp_path / "runs"])
    text = write_report(runs, tmp_path / "report", x="learning_rate").read_text()
    assert "| learning_rate | model_options.norm | seeds |" in text  # a key set to None differs from one unset
    assert "| 0.1 | BatchNorm (default) | 0, 1, 2 |" in text and "| 30.0 ± 10.0 (20.0–40.0) | 3 completed |" in text
    assert "| 0.1 | None | 0 |" in text
    assert "| 1.0 | BatchNorm (default) | 0 |" in text and "1 diverged (step 2)" in text  # its last record before the NaN
    assert (tmp_path / "report" / "final_vs_learning_rate.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RunError, match="do not differ in 'model'; they differ in: learning_rate, model_options.norm"):
        write_report(runs, tmp_path / "other", x="model")
    assert cli.main(["report", str(tmp_path / "runs"), "--x", "seed", "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err  # the runs do differ in seed: it said they did not
    assert "a run's seed repeats its setting" in err and "they differ in: learning_rate, model_options.norm" in err
    assert not (tmp_path / "cli").exists()


def test_runs_that_differ_in_their_nan_policy_are_two_settings_not_two_seeds(tiny_run, tmp_path):
    for name, factor in (("half", 0.5), ("tiny", 1e-5)):  # both seed 0: a rollback trains them differently
        folder = repeat_of(tiny_run, tmp_path / "runs" / name, seed=0, learning_rate=0.1, top1=0.2)
        config = json.loads((folder / "config.json").read_text()) | {"rollback_lr_factor": factor}
        (folder / "config.json").write_text(json.dumps(config))
    repeat_of(tiny_run, tmp_path / "runs" / "half_seed1", seed=1, learning_rate=0.1, top1=0.3)
    runs = find_runs([tmp_path / "runs"])
    assert differing_keys(runs) == ["rollback_lr_factor"]
    assert sorted(sorted(run.name for run in group) for group in repeats(runs)) == [["half", "half_seed1"], ["tiny"]]


def test_cli_compare_writes_files_and_plots(tmp_path, capsys):
    assert cli.main(["compare", "resnet18", "efficientnet_b0", "vgg16", "--no-speed", "--out", str(tmp_path)]) == 0
    assert "| vgg16 | 224 | 138.36 | 15.470 |" in capsys.readouterr().out
    for name in ("compare.md", "compare.csv", "compare.json", "accuracy_vs_gmacs.png", "vgg16_layers.png",
                 "resnet18_layers.png", "efficientnet_b0_layers.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_the_modern_set_is_drawn_beside_the_lineage_with_published_figures(tmp_path):
    """`compare --modern` adds the 2016-2022 frontier: every one of its models has torchvision's published top-1
    and GMACs, and the bubble chart draws the two sets in two colours, each in the legend."""
    from jaxconv.compare import MODERN_MODELS, plots

    assert not set(MODERN_MODELS) & set(ILSVRC_MODELS)
    for name in MODERN_MODELS:
        figures = published(name)
        assert figures.top1 is not None and figures.gmacs is not None, name
    rows = [{"model": name, "gmacs": published(name).gmacs, "params": published(name).params,
             "published_top1": published(name).top1} for name in ("resnet50", "vgg16", "convnext_tiny", "mobilenet_v2")]
    figures = []
    original = plots._save
    plots._save = lambda fig, path: figures.append(fig) or original(fig, path)
    try:
        plots.plot_accuracy_vs_gmacs(rows, tmp_path / "chart.png", lineage=ILSVRC_MODELS)
    finally:
        plots._save = original
    ax = figures[0].axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "ILSVRC lineage (2012-2015)" in legend and "after ILSVRC (2016-2022)" in legend
    assert [len(c.get_offsets()) for c in ax.collections] == [2, 2]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["compare", "resnet5", "--no-speed"], "unknown model 'resnet5'"),
        (["compare", "--no-speed", "--runs", "/nonexistent"], "/nonexistent: no such directory"),
        (["compare", "lenet5", "--no-speed", "--image-size", "8"], "--image-size 8"),
        (["report", "/nonexistent"], "/nonexistent: no such directory"),
        (["report", __file__], f"{__file__}: not a directory"),
        (["compare", "resnet20", "--no-speed", "--out", f"{__file__}/sub"], "--out"),  # was a traceback after the table
    ],
)
def test_bad_input_is_one_line_with_exit_status_2(args, needle, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_report_reads_past_odd_records_and_counts_a_run_given_twice_once(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    odd = ['{"split": "eval"}', '{"step": "x", "split": "train", "loss": 1.0, "top1": 0.5}']
    (copy / "metrics.jsonl").write_text("\n".join(lines[:1] + odd + lines[1:]) + "\n")
    run = load_run(copy)
    assert len(run.evals) == 2 and any("2 record(s) without an integer step" in note for note in run.notes)
    assert [r.path for r in find_runs([copy, copy, tmp_path])] == [copy]


def test_a_failed_out_removes_the_parent_folders_it_created(tiny_run, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "out"
    assert cli.main(["report", str(tiny_run), "--out", str(out), "--x", "bogus_key"]) == 2
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["compare", "lenet5", "--no-speed", "--image-size", "8", "--out", str(out)]) == 2
    assert list(tmp_path.iterdir()) == []
    assert "--image-size 8" in capsys.readouterr().err


def test_a_study_plans_one_run_per_network_in_its_own_workdir(tmp_path):
    runs = plan([str(PLAIN_VS_RESIDUAL)], runs_dir=tmp_path, overrides={"log_every_steps": "5"})
    assert [r.name for r in runs] == ["resnet20", "resnet56", "resnet20_seed1", "resnet56_seed1", "resnet20_seed2",
                                      "resnet56_seed2", "plain20", "plain56"]
    assert runs[0].experiment.endswith("study_plain_vs_residual.py:quick")
    assert runs[6].workdir == tmp_path / "study_plain_vs_residual" / "quick" / "plain20"
    assert dict(runs[6].overrides) == {"model": "plain20", "log_every_steps": "5"}
    assert dict(runs[4].overrides) == {"model": "resnet20", "seed": "2", "log_every_steps": "5"}
    assert "--config.model=plain20" in runs[6].argv()
    with pytest.raises(SweepError, match=r"--set seed=3: study_plain_vs_residual.py sets seed itself "
                                         r"\(run 'resnet20_seed1': 1\); leave it out, or pick runs with --only"):
        plan([str(PLAIN_VS_RESIDUAL)], runs_dir=tmp_path, overrides={"seed": "3"})
    full = plan([str(PLAIN_VS_RESIDUAL)], runs_dir=tmp_path, variant="full")
    assert len(full) == 12 and full[-1].experiment.endswith("imagenet_resnet50.py")
    script = slurm_array(full, sbatch_options=["--gres=gpu:1"])
    assert "#SBATCH --array=0-11" in script and "#SBATCH --gres=gpu:1" in script
    assert script.count("jaxconv.cli train") == 12
    with pytest.raises(SweepError, match="unknown variant 'medium'"):
        plan([str(PLAIN_VS_RESIDUAL)], variant="medium")
    with pytest.raises(SweepError, match="has no run 'resnet110'"):
        plan([str(PLAIN_VS_RESIDUAL)], only=["resnet110"])


def test_experiment_variants_load_by_suffix():
    quick, full = load_config(f"{PLAIN_VS_RESIDUAL}:quick"), load_config(f"{PLAIN_VS_RESIDUAL}:full")
    assert (quick.dataset, quick.image_size, quick.num_train_steps) == ("shapes", 32, 1_000)
    assert (full.dataset, full.num_train_steps) == ("cifar10", 64_000)
    with pytest.raises(ConfigError, match="unknown variant; study_plain_vs_residual.py has quick, full"):
        load_config(f"{PLAIN_VS_RESIDUAL}:medium")
    with pytest.raises(ConfigError, match="has no variants"):
        load_config(f"{REPO / 'experiments' / 'default.py'}:quick")


def test_none_is_a_value_of_string_keys_and_unsets_nullable_ones():
    from jaxconv.train.config import apply_overrides, base_config

    config = apply_overrides(base_config(), {"augment": "none", "image_size": "32"})
    assert config.augment == "none" and config.image_size == 32
    assert apply_overrides(config, {"image_size": "None"}).image_size is None


def test_every_study_plans_runs_that_validate(tmp_path):
    from jaxconv.train.config import apply_overrides, validate

    studies = sorted((REPO / "experiments").glob("study_*.py"))
    assert len(studies) >= 7
    for study in studies:
        for variant in ("quick", "full"):
            for run in plan([str(study)], runs_dir=tmp_path, variant=variant):
                validate(apply_overrides(load_config(run.experiment), dict(run.overrides)), device_count=8)


@pytest.mark.parametrize("variant, low", [("quick", 1.9), ("full", 1.95)])
def test_the_scaling_study_compares_networks_of_twice_the_base_macs(variant, low):
    """Study (g) compares at matched MACs: measured by the analyzer, not the nominal multipliers."""
    from jaxconv.train.config import apply_overrides

    runs = plan([str(REPO / "experiments" / "study_scaling.py")], variant=variant)
    macs = {}
    for run in runs:
        config = apply_overrides(load_config(run.experiment), dict(run.overrides))
        macs[run.name] = cached_summary(config.model, image_size=config.image_size, **dict(config.model_options)).macs
    ratios = {name: value / macs["base"] for name, value in macs.items() if name != "base"}
    assert set(ratios) == {"depth", "width", "resolution", "compound"}
    assert all(low < ratio < 2.1 for ratio in ratios.values()), ratios


def test_an_unset_model_option_reads_as_the_models_own_default(tiny_run):
    import dataclasses

    from jaxconv.compare.runs import setting_values

    run = find_runs([tiny_run])[0]
    alexnet = dataclasses.replace(run, config=run.config | {"model": "alexnet", "model_options": {}})
    vgg = dataclasses.replace(run, config=run.config | {"model": "vgg11_bn", "model_options": {"kernel_size": 5}})
    mine = dataclasses.replace(run, config=run.config | {"model": "not_registered_here", "model_options": {}})
    keys = ["model_options.norm", "model_options.kernel_size", "model_options.dropout", "learning_rate"]
    assert setting_values(alexnet, keys)[::2] == ["None (default)", "0.5 (default)"]  # AlexNet has no norm
    assert setting_values(vgg, keys)[1] == "5"
    assert setting_values(mine, keys)[:1] == ["default"]  # a model this process cannot look up
    resnet = dataclasses.replace(run, config=run.config | {"model": "resnet20", "model_options": {}})
    assert setting_values(resnet, keys)[:1] == ["BatchNorm (default)"]  # a module default, named


def test_the_reports_accuracy_chart_has_the_datasets_chance_and_one_bubble_per_setting(tiny_run, tmp_path):
    from jaxconv.compare import plots

    for seed, top1 in enumerate((0.2, 0.3, 0.7)):
        repeat_of(tiny_run, tmp_path / "runs" / f"lr0.1_seed{seed}", seed=seed, learning_rate=0.1, top1=top1)
    repeat_of(tiny_run, tmp_path / "runs" / "lr0.5", seed=0, learning_rate=0.5, top1=0.5)
    figures = []
    original = plots._save
    plots._save = lambda fig, path: figures.append((pathlib.Path(path).name, fig)) or original(fig, path)
    try:
        write_report(find_runs([tmp_path / "runs"]), tmp_path / "report")
    finally:
        plots._save = original
    (chart,) = [fig for name, fig in figures if name == "accuracy_vs_gmacs.png"]
    ax = chart.axes[0]
    assert [line.get_label() for line in ax.get_lines() if "chance" in line.get_label()] == ["chance (10%)"]  # shapes
    labels = sorted(text.get_text() for text in ax.texts)
    assert labels == ["lr0.1 (3 seeds)", "lr0.5"]  # the setting, named once without its first seed
    (bar,) = [c for c in ax.containers if c.get_label() == "seeds: min–max"]
    segment = bar.lines[2][0].get_segments()[0]  # the one bar: from the lowest seed to the highest
    assert segment[0][1] == pytest.approx(20.0) and segment[1][1] == pytest.approx(70.0)


def drawn_figures(plots, call) -> dict:
    """The figures ``call`` saves, by file name, as they were drawn."""
    figures = {}
    original = plots._save
    plots._save = lambda fig, path: figures.update({pathlib.Path(path).name: fig}) or original(fig, path)
    try:
        call()
    finally:
        plots._save = original
    return figures


def shown(text) -> str:
    """What matplotlib draws for a Text: its mathematics rendered (no '$' left), or the string as written."""
    string, mathematics = text._preprocess_math(text.get_text())
    return "(mathematics)" if mathematics else string


def test_log_axes_tick_labels_are_readable_while_a_dollar_in_a_title_stays_literal(tiny_run, tmp_path):
    """Turning matplotlib's TeX parser off for whole figures (so that a '$' in a title was literal) printed every
    log axis' tick labels as raw '$\\mathdefault{10^{-1}}$'."""
    from jaxconv.compare import plots

    for rate in (0.01, 0.1, 1.0):
        repeat_of(tiny_run, tmp_path / "runs$" / f"lr{rate}", seed=0, learning_rate=rate, top1=0.3)
    runs = find_runs([tmp_path / "runs$"])
    figures = drawn_figures(plots, lambda: write_report(runs, tmp_path / "report", x="learning_rate",
                                                        title="$\\lr$ sweep"))
    for name in ("accuracy_vs_gmacs.png", "final_vs_learning_rate.png"):
        ax = figures[name].axes[0]
        assert ax.get_xscale() == "log"
        ticks = [shown(label) for label in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if label.get_text()]
        assert ticks and not any("mathdefault" in tick or "$" in tick for tick in ticks), (name, ticks)
    assert shown(figures["final_vs_learning_rate.png"]._suptitle) == "$\\lr$ sweep"
    assert shown(figures["curves.png"]._suptitle) == "$\\lr$ sweep"


def test_compares_chart_of_your_accuracy_draws_runs_at_their_own_size_with_their_datasets_chance(tiny_run, tmp_path):
    """It drew ImageNet's chance (0.1%) for runs on the 10-class shapes, at the GMACs of the size compared (32 px)
    where the runs trained at 16 px."""
    from jaxconv.compare import plots

    stock = tmp_path / "stock"
    stock.mkdir()
    config = json.loads((tiny_run / "config.json").read_text())
    (stock / "config.json").write_text(json.dumps({**config, "model_options": {}}))
    (stock / "metrics.jsonl").write_text((tiny_run / "metrics.jsonl").read_text())
    figures = drawn_figures(plots, lambda: cli.main(["compare", "resnet20", "--no-speed", "--runs", str(stock),
                                                     "--out", str(tmp_path / "out")]))
    ax = figures["your_accuracy_vs_gmacs.png"].axes[0]
    assert [line.get_label() for line in ax.get_lines() if "chance" in line.get_label()] == ["chance (10%)"]
    (bubble,) = ax.collections[0].get_offsets()
    assert config["image_size"] == 16
    assert bubble[0] == pytest.approx(summarize("resnet20", 16).macs / 1e9)
    assert bubble[0] != pytest.approx(summarize("resnet20", 32).macs / 1e9)


def test_one_diverged_run_leaves_the_others_loss_and_learning_rate_readable(tiny_run, tmp_path):
    """A run that diverged (last logged loss 5.2e13, at a rate 10^5 times the others') set the loss axes to 6e13
    and the learning rate's to 10^4: every other curve lay flat on the floor."""
    from jaxconv.compare import plots

    repeat_of(tiny_run, tmp_path / "runs" / "lr0.1", seed=0, learning_rate=0.1, top1=0.3)
    wild = repeat_of(tiny_run, tmp_path / "runs" / "lr1e4", seed=0, learning_rate=1e4, top1=None)
    records = [json.loads(line) for line in (wild / "metrics.jsonl").read_text().splitlines()]
    records = [r | {"loss": 5.2e13, "learning_rate": 1e5 * r.get("learning_rate", 0.1)} if r["split"] == "train"
               else r for r in records]
    (wild / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = drawn_figures(plots, lambda: write_report(find_runs([tmp_path / "runs"]), tmp_path / "report",
                                                        x="learning_rate"))
    calm = [json.loads(line)["loss"] for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    loss_ax, _, lr_ax = figures["curves.png"].axes
    top = loss_ax.get_ylim()[1]
    assert max(calm) <= top < 2 * max(calm + [2.31])  # the others' losses fill the axis, ln 10 on it
    assert any(tuple(c.get_offsets()[0])[1] == top and c.get_paths() for c in loss_ax.collections)  # the × on the edge
    assert any("diverged (1 of 2 runs)" in t.get_text() for t in figures["curves.png"].legends[0].get_texts())
    assert lr_ax.get_yscale() == "log"
    final_loss = figures["final_vs_learning_rate.png"].axes[0]
    top = final_loss.get_ylim()[1]
    assert top < 10
    (mark,) = [c for c in final_loss.collections if c.get_label().startswith("diverged (1 runs)")]
    assert mark.get_offsets()[0][1] == top


def test_the_reports_wall_time_counts_every_session_and_a_run_without_a_command_is_noted(tiny_run, tmp_path):
    """'How the runs were made' read the last sweep.jsonl line of each run: a run extended by a second sweep lost
    its first session's time and command, and a run with no line was left out without a word."""
    extended = repeat_of(tiny_run, tmp_path / "runs" / "lr0.1", seed=0, learning_rate=0.1, top1=0.3)
    by_hand = repeat_of(tiny_run, tmp_path / "runs" / "lr0.5", seed=0, learning_rate=0.5, top1=0.4)
    for run, seconds in ((extended, 95.0), (by_hand, 20.0)):  # summary.json: every session's time
        (run / "summary.json").write_text(json.dumps({"status": "completed", "wall_time_s": seconds}))
    sessions = [{"run": "lr0.1", "exit_code": 0, "wall_time_s": 60.0, "machine": "box", "date": "2026-12-01",
                 "command": f"train --workdir {extended} --config.num_train_steps={steps}"}
                for steps in (100, 200)]
    (tmp_path / "runs" / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sessions))
    text = write_report(find_runs([tmp_path / "runs"]), tmp_path / "report").read_text()
    assert "1m55s of training wall time in all" in text  # 95 s + 20 s, not the last session's 60 s
    assert "--config.num_train_steps=100\n" in text and "--config.num_train_steps=200\n" in text
    assert "No command recorded for lr0.5" in text


def sweep_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_script", pathlib.Path(__file__).parents[1] / "scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


INCEPTION = str(pathlib.Path(__file__).parents[1] / "experiments" / "study_inception.py")


@pytest.mark.parametrize("extra,needle", [
    (["--set", "num_train_step=2"], "--set num_train_step=2: run 'reduced': config.num_train_step"),  # ran every run
    (["--set", "learning_rate=-1"], "--set learning_rate=-1: run 'reduced'"),
    (["--runs-dir", "{file}"], "is a file; give a folder"),  # a NotADirectoryError traceback after the first run
    (["--slurm", "{tmp}/nowhere/s.sbatch"], "--slurm {tmp}/nowhere/s.sbatch: cannot write it"),
    (["--report", "{file}"], "--report {file}: is a file"),  # said after every run had trained, exit 0
    (["--report", "{tmp}/rep", "--x", "learnin_rate"], "--x learnin_rate: the sweep's runs do not differ in 'learnin_rate'; they differ in: model"),
    (["--only", "nave"], "--only nave: no such run"),  # with two files: 'no run selected'
])
def test_a_sweeps_mistakes_are_one_line_before_anything_runs(tmp_path, capsys, extra, needle):
    afile = tmp_path / "afile"
    afile.write_text("x")
    extra = [e.format(file=afile, tmp=tmp_path) for e in extra]
    default = str(pathlib.Path(INCEPTION).with_name("default.py"))
    argv = [INCEPTION, *([default] if "--only" in extra else []), *extra]
    if "--runs-dir" not in extra:
        argv += ["--runs-dir", str(tmp_path / "runs")]
    assert sweep_main()(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sweep: error: ") and needle.format(file=afile, tmp=tmp_path) in err[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "rep").exists()


def test_a_completed_run_is_skipped_only_when_the_sweep_asks_for_the_same(tmp_path, capsys):
    """A finished sweep run again with another --set reused the old results under the new settings; an empty
    summary.json was a traceback."""
    workdir = tmp_path / "runs" / "study_inception" / "quick" / "reduced"
    workdir.mkdir(parents=True)
    argv = [INCEPTION, "--only", "reduced", "--runs-dir", str(tmp_path / "runs"), "--dry-run"]
    (workdir / "summary.json").write_text("")
    assert sweep_main()(argv) == 0
    assert "jaxconv.cli train" in capsys.readouterr().out
    config = load_config(f"{INCEPTION}:quick")
    config.update(learning_rate=0.05)
    (workdir / "config.json").write_text(json.dumps(config.to_dict()))
    (workdir / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert sweep_main()(argv + ["--set", "learning_rate=0.05"]) == 0
    assert "reduced: completed before, skipped" in capsys.readouterr().out
    assert sweep_main()(argv + ["--set", "learning_rate=0.5"]) == 0
    out = capsys.readouterr().out
    assert "completed before with learning_rate=0.05 (now 0.5)" in out and "jaxconv.cli train" in out


def test_a_finished_run_whose_loss_blew_up_leaves_the_others_readable(tiny_run, tmp_path):
    """A run whose training loss rose to 3e4 for a window and came back (it finished: not 'diverged') set the
    loss axis to 3.5e4, every other curve flat on the floor, with nothing said."""
    from jaxconv.compare import plots

    repeat_of(tiny_run, tmp_path / "runs" / "lr0.1", seed=0, learning_rate=0.1, top1=0.3)
    spiky = repeat_of(tiny_run, tmp_path / "runs" / "lr3", seed=0, learning_rate=3.0, top1=0.2)
    records = [json.loads(line) for line in (spiky / "metrics.jsonl").read_text().splitlines()]
    first_train = next(i for i, r in enumerate(records) if r["split"] == "train")
    records[first_train] = records[first_train] | {"loss": 3e4}
    (spiky / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = drawn_figures(plots, lambda: write_report(find_runs([tmp_path / "runs"]), tmp_path / "report",
                                                        x="learning_rate"))
    loss_ax = figures["curves.png"].axes[0]
    top = loss_ax.get_ylim()[1]
    assert 2.31 < top <= plots.LOSS_AXIS_GUESSES * 2.303  # ln 10 on the axis, 3e4 not
    (mark,) = [c for c in loss_ax.collections if c.get_offsets().shape[0] and c.get_offsets()[0][1] == top]
    assert mark.get_offsets()[0][0] == records[first_train]["step"]
    assert any("loss above the axis (1 of 2 runs, up to 3e+04)" in t.get_text()
               for t in figures["curves.png"].legends[0].get_texts())


def test_a_diverged_runs_row_counts_the_steps_its_summary_records(tiny_run, tmp_path):
    """Its row read 'steps 2 | epochs 0.25 | … | diverged (step 3)': the steps and epochs of its last finite record."""
    wild = repeat_of(tiny_run, tmp_path / "runs" / "lr50", seed=0, learning_rate=50.0, top1=None)
    (wild / "summary.json").write_text(json.dumps({"status": "diverged", "error": "NaN at step 3", "steps": 3,
                                                   "epochs": 0.375, "diverged_at_step": 3}))
    text = write_report(find_runs([tmp_path / "runs"]), tmp_path / "report").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| lr50 |") and "diverged" in line]  # runs table
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[7:9] == ["3", "0.38"] and "diverged (step 3)" in row
    # a preempted run's summary is its last session's: a resumed run's records go further
    (wild / "summary.json").write_text(json.dumps({"status": "preempted", "steps": 1, "epochs": 0.0}))
    assert find_runs([wild])[0].steps == 2


def test_bubble_areas_are_proportional_to_the_parameters(tmp_path):
    """The chart says 'bubble area ∝ parameters'; the areas were 2000 p / p_max + 20, so a 0.27M network beside
    VGG-16 was drawn 6x too large."""
    from jaxconv.compare import plots

    rows = [{"model": "vgg16", "gmacs": 15.5, "params": 138_357_544, "published_top1": 71.6},
            {"model": "resnet20", "gmacs": 0.04, "params": 269_722, "published_top1": 60.0}]
    figures = drawn_figures(plots, lambda: plots.plot_accuracy_vs_gmacs(rows, tmp_path / "chart.png"))
    (bubbles,) = [c for c in figures["chart.png"].axes[0].collections if len(c.get_sizes()) == 2]
    big, small = bubbles.get_sizes()
    assert small / big == pytest.approx(269_722 / 138_357_544)


def test_your_accuracy_compares_runs_of_one_dataset(tiny_run, tmp_path):
    """A 4-class folder run at chance (top-1 25%) filled ResNet-20's row over the 10-class runs (11%)."""
    from jaxconv.compare.table import uncompared_runs

    config = json.loads((tiny_run / "config.json").read_text()) | {"model_options": {}}
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    for name, dataset, top1 in (("ten_a", "shapes", 0.11), ("ten_b", "shapes", 0.10), ("four", "folder", 0.25)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config | {"dataset": dataset}))
        (tmp_path / name / "metrics.jsonl").write_text("".join(
            json.dumps(r | {"top1": top1} if r["split"] == "eval" else r) + "\n" for r in records))
    runs = find_runs([tmp_path / "ten_a", tmp_path / "ten_b", tmp_path / "four"])
    (row,) = compare_rows(["resnet20"], runs=runs, summarize=summarize)
    assert row["your_run"] == str(tmp_path / "ten_a") and row["your_top1"] == pytest.approx(11.0)
    assert uncompared_runs(["resnet20"], runs) == [
        f"{tmp_path / 'four'}: trained on folder, and most runs given on shapes: top-1s on other classes do not "
        f"compare; left out (give its runs alone to compare them)"]
