"""Validating translated data or model outputs with people: annotation packages, a local
annotation page, and the acceptance and agreement report.

    python -m basque_vlm.validate sample --input=vqav2_eu.items.jsonl,aokvqa_eu.items.jsonl \\
        --out=validation/ [--annotators=4 | --annotator_names=ana,jon,miren,peru] \\
        [--per_benchmark=100] [--overlap=0.25] [--seed=0] [--image_root=DIR]
    python -m basque_vlm.validate serve --dir=validation/ --annotator=ana [--port=8765] \\
        [--host=127.0.0.1]
    python -m basque_vlm.validate serve --dir=validation/ --annotator=ana --export_csv=ana.csv
    python -m basque_vlm.validate serve --dir=validation/ --annotator=ana --import_csv=ana.csv
    python -m basque_vlm.validate report --dir=validation/ [--out=validation/report]

``sample`` reads translation items or ``evaluate`` predictions (JSONL; `datagen.items`), draws
``--per_benchmark`` items per benchmark, and writes one package per annotator under ``--out``
with a share ``--overlap`` of the items in every package (`datagen.sampling`). ``serve``
serves one annotator's package as a web page that saves every answer at once
(`datagen.annotation_page`); with ``--export_csv`` or ``--import_csv`` it instead writes the
package as a spreadsheet, or reads the answers back from one (`datagen.annotation_csv`).
``report`` writes ``report.md``, ``report.json``, ``acceptance.png`` and ``corrected.jsonl``
(`datagen.validation_report`). The last stdout line of each is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags, logging

from basque_vlm.runtime import cli

COMMANDS = ("sample", "serve", "report")
flags.DEFINE_list("input", None, "sample: JSONL files of translation items or evaluate "
                  "predictions, comma-separated.")
flags.DEFINE_string("image_root", None, "sample: the folder of the predictions' images "
                    "(IMAGE_ROOT/<task>/<id>.<ext> or IMAGE_ROOT/<id>.<ext>).")
flags.DEFINE_integer("annotators", 4, "sample: number of annotators (named a1..aK).",
                     lower_bound=1)
flags.DEFINE_list("annotator_names", None, "sample: the annotators' names instead of a1..aK.")
flags.DEFINE_integer("per_benchmark", 100, "sample: items drawn per benchmark.", lower_bound=1)
flags.DEFINE_float("overlap", 0.25, "sample: share of the drawn items every annotator judges.",
                   lower_bound=0, upper_bound=1)
flags.DEFINE_integer("seed", 0, "sample: seed of the draw.")
flags.DEFINE_string("out", None, "sample: the sample folder to write (absent or empty); "
                    "report: output folder (default DIR/report).")
flags.DEFINE_string("dir", None, "serve, report: the sample folder that `sample` wrote.")
flags.DEFINE_string("annotator", None, "serve: whose package.")
flags.DEFINE_string("host", "127.0.0.1", "serve: address to listen on.")
flags.DEFINE_integer("port", 8765, "serve: port (0: any free one).")
flags.DEFINE_string("export_csv", None, "serve: write the package with its answers to this "
                    "CSV file instead of serving it.")
flags.DEFINE_string("import_csv", None, "serve: save the answers of this CSV file (as "
                    "--export_csv writes it) instead of serving the package.")
FLAGS = flags.FLAGS


def _required(command: str, *names: str) -> None:
    missing = [f"--{n}" for n in names if FLAGS[n].value is None]
    if missing:
        raise ValueError(f"{command} needs {', '.join(missing)}")


def _sample() -> None:
    from basque_vlm.datagen import annotations, items, sampling

    _required("sample", "input", "out")
    names = FLAGS.annotator_names or [f"a{i + 1}" for i in range(FLAGS.annotators)]
    if FLAGS.annotator_names and FLAGS["annotators"].present and \
            len(names) != FLAGS.annotators:
        raise ValueError(f"--annotators={FLAGS.annotators} but --annotator_names has "
                         f"{len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError(f"--annotator_names must be distinct, got {','.join(names)}")
    for name in names:
        annotations.check_name(name)
    image_root = Path(FLAGS.image_root) if FLAGS.image_root else None
    inputs = [Path(p) for p in FLAGS.input]
    found = items.read_items(inputs, image_root)
    assigned = sampling.draw(found, FLAGS.per_benchmark, FLAGS.overlap, names, FLAGS.seed)
    settings = {"inputs": [str(p.absolute()) for p in inputs],
                "image_root": str(image_root.absolute()) if image_root else None,
                "seed": FLAGS.seed, "per_benchmark": FLAGS.per_benchmark,
                "overlap": FLAGS.overlap}
    out = Path(FLAGS.out)
    manifest = sampling.write_sample(out, found, assigned, names, settings)
    for benchmark, b in manifest["benchmarks"].items():
        print(f"{benchmark} ({b['kind']}): {b['sampled']} of {b['available']} items drawn, "
              f"{b['overlap']} for every annotator")
    for name, p in manifest["packages"].items():
        print(f"{name}: {p['items']} items in {out / name}")
    print(json.dumps({"out": str(out), "items": len(assigned),
                      "benchmarks": manifest["benchmarks"], "packages": manifest["packages"]}),
          flush=True)


def _serve() -> None:
    from basque_vlm.datagen import annotation_csv, annotation_page, annotations

    _required("serve", "dir", "annotator")
    if FLAGS.export_csv and FLAGS.import_csv:
        raise ValueError("--export_csv and --import_csv: one at a time")
    store = annotations.AnswerStore(annotations.Package.load(Path(FLAGS.dir), FLAGS.annotator))
    if FLAGS.export_csv:
        print(json.dumps({"csv": FLAGS.export_csv,
                          **annotation_csv.export_csv(store, Path(FLAGS.export_csv))}))
        return
    if FLAGS.import_csv:
        print(json.dumps({"csv": FLAGS.import_csv,
                          **annotation_csv.import_csv(store, Path(FLAGS.import_csv))}))
        return

    def ready(url: str) -> None:
        state = store.state()
        print(f"{FLAGS.annotator}: {state['done']}/{state['total']} answered; annotation page "
              f"at {url} (Ctrl-C to stop)", flush=True)

    annotation_page.serve(store, FLAGS.host, FLAGS.port, ready)
    state = store.state()
    print(json.dumps({"annotator": FLAGS.annotator, "done": state["done"],
                      "total": state["total"]}), flush=True)


def _report() -> None:
    from basque_vlm.datagen import validation_report

    _required("report", "dir")
    root = Path(FLAGS.dir)
    out = Path(FLAGS.out) if FLAGS.out else root / "report"
    text, report = validation_report.write(root, out)
    print(text, end="")
    rates = report["acceptance"]
    agree = report["agreement"][validation_report.ALL]
    print(json.dumps({"report": str(out / validation_report.MARKDOWN),
                      "acceptance": {b: s["rate"] for b, s in rates["by_benchmark"].items()},
                      "fleiss_kappa": agree["fleiss_kappa"],
                      "krippendorff_alpha": agree["krippendorff_alpha"],
                      "corrected": report["corrections"]["corrected"],
                      "unanswered": rates[validation_report.ALL]["unanswered"]}), flush=True)


def _main(command: str) -> None:
    logging.set_verbosity(logging.WARNING)  # no INFO lines (matplotlib's font cache, ...)
    {"sample": _sample, "serve": _serve, "report": _report}[command]()


if __name__ == "__main__":
    cli.start("validate", _main, COMMANDS)
