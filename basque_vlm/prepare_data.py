"""LLaVA-format JSON/JSONL + image folder → an ArrayRecord dataset (TFDS format) for one language.

    python -m basque_vlm.prepare_data --input=pixmo_eu.jsonl --image_root=images/ \\
        --out=data/pixmo_eu --lang=eu [--max_bad_fraction=0.01] [--name=pixmo_eu]

Progress lines go to stdout; the last stdout line is the JSON summary (``written``, ``skipped``,
``skipped_by_kind``, ...), also when it fails. By default the first bad record stops it (exit 1,
one line on stderr naming the record's ``id``); with ``--max_bad_fraction`` bad records are skipped
and counted, and it fails if they are more than that fraction.
"""

from __future__ import annotations

import json

from absl import app, flags

from basque_vlm.data import sources
from basque_vlm.runtime import cli

flags.DEFINE_string("input", None, "LLaVA/OpenAI-style JSON list or JSONL file.", required=True)
flags.DEFINE_string("image_root", None, "Folder the records' image paths are relative to.",
                    required=True)
flags.DEFINE_string("out", None, "Output dataset folder (absent or empty).", required=True)
flags.DEFINE_string("lang", None, "Language code of the records, e.g. eu or en.", required=True)
flags.DEFINE_float("max_bad_fraction", 0.0, "Skip bad records up to this fraction of all records "
                   "(0: stop at the first).")
flags.DEFINE_string("name", None, "Dataset name (default: the input file's stem + '_' + lang).")
FLAGS = flags.FLAGS


def _prepare() -> None:
    try:
        summary = sources.prepare(FLAGS.input, FLAGS.image_root, FLAGS.out, FLAGS.lang,
                                  name=FLAGS.name, max_bad_fraction=FLAGS.max_bad_fraction,
                                  progress=lambda line: print(line, flush=True))
    except sources.BadRecords as e:
        print(json.dumps(e.summary), flush=True)
        raise
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    app.run(cli.main("prepare_data", _prepare))
