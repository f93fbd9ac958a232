"""The lm-evaluation-harness model ``basque_vlm`` against lm-eval's own ``hf`` model on the same
weights (a tiny random Llama; the real SmolLM2 in the slow test), on local tasks: per-choice
log-likelihoods, greedy flags and accuracy, generated strings, rolling log-likelihoods. Then
lm-eval's command line with ``--model basque_vlm`` (``python -m basque_vlm.lm_eval``), and
``evaluate`` writing lm-eval and multimodal tasks into one results JSON and table."""

import json
from types import SimpleNamespace

import pytest
import run_cli
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from basque_vlm.eval import lm_eval_tasks, report
from basque_vlm.eval.lm_eval_model import BasqueVLM
from basque_vlm.testing import checkpoints, lm_eval_fixtures, tiny_models

TASKS = ["local_mc_eu", "local_mc_en", "local_gen_en", "local_rolling_eu"]
MC = ["local_mc_eu", "local_mc_en"]


def local_tasks(include, names=TASKS):
    """The local tasks only (indexing lm-eval's own takes 10 s; the command lines do)."""
    return lm_eval_tasks.task_manager(names, str(include), include_defaults=False)


def both_models(llm_dir, ckpt, include, batch_size=4):
    """Each model's ``simple_evaluate`` of ``TASKS`` (samples logged), and the models."""
    manager = local_tasks(include)
    ours = BasqueVLM(checkpoint=str(ckpt), batch_size=batch_size)
    hf = HFLM(pretrained=str(llm_dir), dtype="float32", device="cpu", batch_size=batch_size)
    runs = {name: simple_evaluate(model=model, tasks=TASKS, task_manager=manager,
                                  log_samples=True)
            for name, model in (("ours", ours), ("hf", hf))}
    return runs, ours, hf


def assert_same(runs):
    """Per request, the same numbers and strings; per task, the same scores."""
    ours, hf = runs["ours"], runs["hf"]
    for task in TASKS:
        for mine, theirs in zip(ours["samples"][task], hf["samples"][task], strict=True):
            assert mine["doc_id"] == theirs["doc_id"]
            for a, b in zip(mine["resps"], theirs["resps"], strict=True):
                if task in MC:
                    (ll_a, greedy_a), (ll_b, greedy_b) = a[0], b[0]
                    assert ll_a == pytest.approx(ll_b, abs=1e-4) and greedy_a == greedy_b
                elif task == "local_gen_en":
                    assert a == b
                else:  # rolling: a sum over a whole text
                    assert a[0] == pytest.approx(b[0], rel=1e-5, abs=1e-3)
    for task in MC:
        for metric in ("acc,none", "acc_norm,none"):
            assert ours["results"][task][metric] == hf["results"][task][metric]
    assert ours["results"]["local_gen_en"] == hf["results"]["local_gen_en"]


def greedy_probe(ours, hf, contexts):
    """Each context's greedy next token (the text ``generate_until`` gives) scored as a
    continuation by both models: the same log-likelihoods and greedy flags, some of them true."""
    until = {"until": [], "max_gen_toks": 1, "do_sample": False}
    texts = ours.generate_until([Instance("generate_until", {}, (c, until), 0)
                                 for c in contexts])
    assert texts == hf.generate_until([Instance("generate_until", {}, (c, until), 0)
                                       for c in contexts])
    pairs = [Instance("loglikelihood", {}, (c, t), 0) for c, t in zip(contexts, texts)
             if t.strip() and "\ufffd" not in t]
    mine, theirs = ours.loglikelihood(pairs), hf.loglikelihood(pairs)
    for (ll_a, greedy_a), (ll_b, greedy_b) in zip(mine, theirs, strict=True):
        assert ll_a == pytest.approx(ll_b, abs=1e-4) and greedy_a == greedy_b
    assert any(greedy for _, greedy in mine)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, demo_root):
    """A tiny random Llama, its checkpoint and the local tasks; lm-eval's command line and
    ``evaluate`` started on them (they run while the in-process parity runs)."""
    root = tmp_path_factory.mktemp("lm_eval")
    tiny_models.save_llama(root / "llm")
    ckpt = checkpoints.assembled(root / "llm", root / "ckpt")
    include = lm_eval_fixtures.write_tasks(root)
    started = [
        run_cli.start("lm_eval", "--model", "basque_vlm", "--model_args", f"checkpoint={ckpt}",
                      "--tasks", "local_mc_en,local_gen_en", "--include_path", include,
                      "--batch_size", "4", "--output_path", root / "cli"),
        run_cli.start("evaluate", f"--checkpoint={ckpt}", f"--lm_eval_include_path={include}",
                      "--tasks=demo_vqa_en,lm_eval:local_mc_tasks,lm_eval:local_rolling_eu",
                      f"--out={root / 'evaluate' / 'results.json'}", "--limit=3",
                      "--max_new_tokens=4", "--batch_size=4")]
    runs, ours, hf = both_models(root / "llm", ckpt, include)
    cli, evaluate = (run_cli.finish(p) for p in started)
    return SimpleNamespace(root=root, ckpt=ckpt, include=include, runs=runs, ours=ours, hf=hf,
                           cli=cli, evaluate=evaluate)


def test_same_scores_as_the_hf_model(tiny):
    assert_same(tiny.runs)
    greedy_probe(tiny.ours, tiny.hf, [r[0] for r in lm_eval_fixtures.MC["en"]]
                 + tiny_models.CORPUS[:4])
    chat = [{"role": "user", "content": "Zer dago irudian?"}]
    answered = [*chat, {"role": "assistant", "content": "Katu bat"}]
    for history, prompt in ((chat, True), (answered, False)):
        assert (tiny.ours.apply_chat_template(history, prompt)
                == tiny.hf.apply_chat_template(history, prompt))


def test_any_mesh_and_scanned_layers_give_the_same_scores(tiny):
    """Rows over data × fsdp (a batch of 3 rounded up to 4 rows), heads over tensor."""
    split = BasqueVLM(checkpoint=str(tiny.ckpt), batch_size=3, scan_layers=True, mesh_data=2,
                      mesh_fsdp=2, mesh_tensor=2)
    pairs = [Instance("loglikelihood", {}, (q, c), 0)
             for q, choices, _ in lm_eval_fixtures.MC["eu"] for c in choices]
    for (ll_a, greedy_a), (ll_b, greedy_b) in zip(split.loglikelihood(pairs),
                                                  tiny.ours.loglikelihood(pairs), strict=True):
        assert ll_a == pytest.approx(ll_b, abs=1e-5) and greedy_a == greedy_b
    texts = [Instance("loglikelihood_rolling", {}, (t,), 0) for t in lm_eval_fixtures.TEXTS]
    assert split.loglikelihood_rolling(texts) == pytest.approx(
        tiny.ours.loglikelihood_rolling(texts), rel=1e-6)


def test_lm_eval_command_line(tiny):
    assert tiny.cli.returncode == 0, tiny.cli.stderr
    [written] = (tiny.root / "cli").rglob("results_*.json")
    results = json.loads(written.read_text())["results"]
    in_process = tiny.runs["ours"]["results"]
    assert results["local_mc_en"]["acc,none"] == in_process["local_mc_en"]["acc,none"]
    assert results["local_gen_en"] == in_process["local_gen_en"]
    assert "basque_vlm" in tiny.cli.stdout


def test_evaluate_writes_both_kinds_of_task(tiny):
    evaluate = tiny.evaluate
    assert evaluate.returncode == 0, evaluate.stderr
    results = json.loads((tiny.root / "evaluate" / "results.json").read_text())
    assert sorted(results) == ["demo_vqa_en", "lm_eval:local_mc_en", "lm_eval:local_mc_eu",
                               "lm_eval:local_rolling_eu"]
    assert results["demo_vqa_en"]["n"] == 3
    for task in MC:
        result = results[lm_eval_tasks.PREFIX + task]
        samples = tiny.runs["ours"]["samples"][task][:3]  # --limit=3
        assert result["acc"] == pytest.approx(sum(s["acc"] for s in samples) / 3)
        assert set(result) >= {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
        assert result["n"] == 3 and result["num_fewshot"] == 0
        assert result["checkpoint"] == str(tiny.ckpt)
    rolling = results["lm_eval:local_rolling_eu"]
    assert rolling["word_perplexity_stderr"] is None and rolling["bits_per_byte"] > 0
    table = (tiny.root / "evaluate" / "results.md").read_text()
    assert evaluate.stdout.endswith(table) and table.startswith("| task | metric | eu | en |\n")
    assert "| lm_eval:local_mc | acc | " in table and "| demo_vqa | accuracy | " in table
    row = next(line for line in table.splitlines() if line.startswith("| lm_eval:local_mc |"))
    assert row.count("(n=3, 0-shot)") == 2


def test_groups_and_tags_as_lm_eval_reports_them(tiny):
    manager = local_tasks(tiny.include, ["local_mc"])  # the tag holds the same tasks
    group = lm_eval_tasks.summarize(simple_evaluate(model=tiny.ours, tasks=["local_mc"],
                                                    task_manager=manager), ["local_mc"])
    assert list(group) == ["local_mc"] and set(group["local_mc"]["subtasks"]) == set(MC)
    subtasks = group["local_mc"]["subtasks"]
    assert group["local_mc"]["n"] == 7
    assert group["local_mc"]["acc"] == pytest.approx(
        sum(s["acc"] * s["n"] for s in subtasks.values()) / 7)
    tag = lm_eval_tasks.summarize(simple_evaluate(model=tiny.ours, tasks=["local_mc_tasks"],
                                                  task_manager=manager), ["local_mc_tasks"])
    assert sorted(tag) == sorted(MC) and tag["local_mc_en"] == subtasks["local_mc_en"]


def test_bad_input_is_a_value_error(tiny):
    with pytest.raises(ValueError, match="'auto' is not supported"):
        BasqueVLM(checkpoint=str(tiny.ckpt), batch_size="auto")
    with pytest.raises(ValueError, match="not a basque_vlm checkpoint"):
        BasqueVLM(checkpoint=str(tiny.ckpt / "missing"))
    with pytest.raises(ValueError, match="needs an lm-eval task name"):
        lm_eval_tasks.split("demo_vqa_eu,lm_eval:")
    with pytest.raises(ValueError, match=r"lm-eval has no task\(s\) \['nope'\]"):
        local_tasks(tiny.include, ["local_mc_eu", "nope"])


def test_table_places_latxa_suite():
    place = lm_eval_tasks.place
    assert place("lm_eval:xnli_eu") == ("lm_eval:xnli", "eu")
    assert place("belebele_eus_Latn") == place("belebele_eng_Latn")[:1] + ("eu",)
    assert place("eus_trivia") == ("lm_eval:eus_trivia", "eu")
    assert place("eus_exams_es_ejadministrativo") == ("lm_eval:eus_exams_ejadministrativo",
                                                      "es")
    assert place("bertaqa_en_mt_hitz") == ("lm_eval:bertaqa_mt_hitz", "en")
    assert place("hellaswag") == ("lm_eval:hellaswag", None)
    table = report.markdown_table({
        "lm_eval:hellaswag": {"acc": 0.5, "acc_stderr": 0.1, "n": 10, "num_fewshot": 0},
        "lm_eval:wikitext": {"word_perplexity": 12.34, "n": 5, "num_fewshot": None}})
    assert table.splitlines()[0] == "| task | metric | eu | en | other |"
    assert "| lm_eval:hellaswag | acc |  |  | 50.0 (n=10, 0-shot) |" in table
    assert "| lm_eval:wikitext | word_perplexity |  |  | 12.34 (n=5) |" in table


@pytest.mark.slow
def test_smollm2_same_scores_as_the_hf_model(tmp_path, smollm2_dir):
    ckpt = checkpoints.assembled(smollm2_dir, tmp_path / "ckpt")
    include = lm_eval_fixtures.write_tasks(tmp_path)
    runs, ours, hf = both_models(smollm2_dir, ckpt, include)
    assert_same(runs)
    greedy_probe(ours, hf, ["The capital of France is", "One, two, three,",
                            "Euskal Herriko hiriburua"])
