"""Translate a training set or a benchmark into another language with an LLM: a checkpoint of
ours or any model behind an OpenAI-compatible server.

    python -m basque_vlm.translate --input=FILE_OR_DIR --out=PATH --target=eu [--source=en] \\
        (--model=CKPT | --endpoint=http://host:8000/v1 --model_name=NAME) \\
        [--kind=auto|llava|vqav2|aokvqa|yes_no|wildvision|jsonl] [--fields=a,b.c] \\
        [--prompt=FILE] [--system=FILE] [--examples=FILE] [--limit=N] [--batch_size=16] \\
        [--max_concurrency=8]

The output has the input's format (`datagen.translation_files`): a LLaVA JSON/JSONL file for
``prepare_data``, or a benchmark folder in the hub layout ``evaluate`` reads
(``OUT/data/{target}-00000-of-00001.parquet``). Beside it: ``OUT_STEM.journal.jsonl`` (rerun
the same command after a kill or failures and it goes on from there), ``OUT_STEM.flags.jsonl``
(the quality flags of flagged rows) and ``OUT_STEM.items.jsonl`` (for ``python -m
basque_vlm.validate sample``). Progress lines go to stdout; the last line is a JSON summary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags, logging

from basque_vlm.datagen.translation_formats import KINDS
from basque_vlm.infer import placement
from basque_vlm.runtime import cli, server_flags

flags.DEFINE_string("input", None, "A LLaVA JSON/JSONL file, a benchmark's parquet/JSONL/JSON "
                    "file, or a folder of them (a hub snapshot).")
flags.DEFINE_string("out", None, "The output: a file for --kind=llava/jsonl on JSON input, "
                    "else a benchmark folder (OUT/data/{target}-00000-of-00001.*).")
flags.DEFINE_string("target", None, "Target language: a code (eu, gl, ca, cy, ga, ...) or an "
                    "English name (Basque); any other code with --target_name.")
flags.DEFINE_string("target_name", None, "The target language's English name, for a code "
                    "the tool does not know.")
flags.DEFINE_string("source", "en", "Source language (as --target).")
flags.DEFINE_string("source_name", None, "The source language's English name (as "
                    "--target_name).")
flags.DEFINE_enum("kind", "auto", ["auto", *KINDS], "What the input is; auto: told by its "
                  "columns.")
flags.DEFINE_list("fields", [], "Fields to translate instead of the kind's (dotted paths into "
                  "objects and lists: question,answers.text); alone, for any JSONL/parquet.")
flags.DEFINE_string("split", None, "The split of a folder holding several (default: the "
                    "--source language's).")
flags.DEFINE_string("model", None, "A project checkpoint that translates (greedy).")
server_flags.define(instead_of="--model")
flags.DEFINE_string("prompt", None, "A file holding the user message template (placeholders "
                    "{text}, {source}, {target}, {source_code}, {target_code}).")
flags.DEFINE_string("system", None, "A file holding the system message (same placeholders "
                    "but {text}; an empty file: none).")
flags.DEFINE_string("examples", None, "Few-shot examples, JSONL of {\"source\", \"target\"} "
                    "(default: those shipped for the direction, if any; empty: none).")
flags.DEFINE_integer("batch_size", 16, "--model: strings decoded together.", lower_bound=1)
flags.DEFINE_integer("max_new_tokens", 4096, "Longest translation in tokens (each string gets "
                     "about twice its characters' worth, as a power of two, up to this).",
                     lower_bound=1)
flags.DEFINE_float("temperature", 0.0, "--endpoint: sampling temperature (0: greedy).",
                   lower_bound=0)
flags.DEFINE_integer("limit", None, "Translate only the first N rows.", lower_bound=1)
flags.DEFINE_string("yes_no", "rule", "A bare yes/no answer: rule (the language table's words), "
                    "model (translated like any text), or YES,NO (these words).")
flags.DEFINE_list("length_band", ["0.5", "2"], "Flag translations whose length / the source's "
                  "lies outside LOW,HIGH.")
flags.DEFINE_bool("language_check", True, "Flag translations that the language identifier "
                  "(py3langid) takes for another language.")
flags.DEFINE_integer("validation_rows", 500, "Rows with validation items (and their images) "
                     "in OUT_STEM.items.jsonl; 0: every row.", lower_bound=0)
flags.DEFINE_string("image_root", None, "--kind=llava: the folder the records' image paths are "
                    "relative to, for the validation items (default: the input's folder).")
placement.define_flags()
FLAGS = flags.FLAGS


def _prompt():
    from basque_vlm.datagen import translation_prompt as tp

    source = tp.language(FLAGS.source, FLAGS.source_name, "--source")
    target = tp.language(FLAGS.target, FLAGS.target_name, "--target")
    system = tp.read_template(Path(FLAGS.system), required=False) if FLAGS.system is not None \
        else tp.DEFAULT_SYSTEM
    template = tp.read_template(Path(FLAGS.prompt)) if FLAGS.prompt else tp.DEFAULT_TEMPLATE
    examples = tp.default_examples(source, target) if FLAGS.examples is None else \
        (Path(FLAGS.examples) if FLAGS.examples else None)
    return tp.Prompt(source, target, system, template,
                     tuple(tp.read_examples(examples)) if examples else ())


def _check_flags() -> None:
    """Flag combinations, checked before anything is read."""
    missing = [f"--{n}" for n in ("input", "out", "target") if not FLAGS[n].value]
    if missing:
        raise ValueError(f"{', '.join(missing)} required")
    if bool(FLAGS.model) == bool(FLAGS.endpoint):
        raise ValueError("give exactly one model: --model=CKPT or --endpoint=URL")
    if FLAGS.endpoint and not FLAGS.model_name:
        raise ValueError("--endpoint needs --model_name")
    if FLAGS.model and FLAGS.model_name:
        raise ValueError("--model_name names the model of --endpoint, not of --model")
    if FLAGS.model and FLAGS.temperature:
        raise ValueError("--temperature: a --model checkpoint translates greedily")


def _backend(prompt):
    from basque_vlm.datagen import translation_backends as backends

    if FLAGS.endpoint:
        client = server_flags.client(FLAGS.endpoint, FLAGS.model_name, FLAGS.api_key_env)
        return backends.ServerBackend(client, prompt, FLAGS.max_new_tokens, FLAGS.temperature)
    cli.quiet_libraries()
    from basque_vlm.eval import runner
    from basque_vlm.store import checkpoint

    mesh = placement.from_flags(checkpoint.load_config(FLAGS.model),
                                checkpoint.stored_bytes(FLAGS.model))
    generator = runner.Generator(FLAGS.model, FLAGS.batch_size, mesh=mesh)
    return backends.CheckpointBackend(generator, FLAGS.model, prompt, FLAGS.max_new_tokens,
                                      chunk=8 * FLAGS.batch_size)


def _translate() -> None:
    from basque_vlm.datagen import translation, translation_prompt
    from basque_vlm.datagen.translation_quality import Checks

    logging.set_verbosity(logging.WARNING)  # no INFO line per HTTP request
    _check_flags()
    prompt = _prompt()
    try:
        band = [float(x) for x in FLAGS.length_band]
    except ValueError:
        raise ValueError(f"--length_band={','.join(FLAGS.length_band)}: expected LOW,HIGH "
                         "numbers") from None
    job = translation.make_job(
        Path(FLAGS.input), Path(FLAGS.out), prompt.source, prompt.target, kind=FLAGS.kind,
        fields=FLAGS.fields, split_name=FLAGS.split,
        yes_no=translation_prompt.yes_no_words(prompt.target, FLAGS.yes_no),
        checks=Checks(prompt.target.code, band, FLAGS.language_check), limit=FLAGS.limit,
        validation_rows=FLAGS.validation_rows,
        image_root=Path(FLAGS.image_root) if FLAGS.image_root else None)
    summary = translation.run(job, _backend(prompt))
    if summary["failed"]:
        kinds = ", ".join(f"{k}: {n}" for k, n in summary["failed_by_kind"].items())
        print(f"translate: {summary['failed']} strings failed ({kinds}); their rows keep the "
              "source text, flagged 'failed'; run the same command again to retry them",
              file=sys.stderr)
    print(json.dumps(summary, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    cli.start("translate", _translate)
