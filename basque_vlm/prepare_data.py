"""Training data → an ArrayRecord dataset (TFDS format) for one language.

LLaVA-format JSON/JSONL and an image folder::

    python -m basque_vlm.prepare_data --input=pixmo_eu.jsonl --image_root=images/ \\
        --out=data/pixmo_eu --lang=eu [--max_bad_fraction=0.01] [--name=pixmo_eu]

or a table as the Hugging Face hub publishes it (a parquet file, a folder of parquet files such
as a ``snapshot_download`` folder, an Arrow file or a ``save_to_disk`` folder), its columns mapped
with ``--columns``; images inline (image structs, bytes), as paths, or as URLs fetched beforehand
by ``download_images`` into the folder given as ``--image_root``::

    python -m basque_vlm.prepare_data --input=pixmo-ask-model-anything-eu/ --split=eu \\
        --columns=question=question,answer=answer,image=image_url --image_root=images/pixmo \\
        --out=data/pixmo_ama_eu --lang=eu --max_bad_fraction=0.01

Progress lines go to stdout; the last stdout line is the JSON summary (``written``, ``skipped``,
``skipped_by_kind``, ...), also when it fails. By default the first bad record stops it (exit 1,
one line on stderr naming the record's ``id``, and its ``row`` in a table); with
``--max_bad_fraction`` bad records are skipped and counted, and it fails if they are more than
that fraction. Rows whose image could not be downloaded are skipped and counted by the download's
failure kind (``http_404``, ...), never as bad records.
"""

from __future__ import annotations

import json

from absl import flags

from basque_vlm.data import sources, tables
from basque_vlm.data.columns import ColumnMap
from basque_vlm.runtime import cli

flags.DEFINE_string("input", None, "LLaVA/OpenAI-style JSON list or JSONL file; or a parquet "
                    "file, a folder of parquet files (a hub snapshot), an .arrow file or a "
                    "datasets save_to_disk folder.", required=True)
flags.DEFINE_string("image_root", None, "Folder that relative image paths are relative to, or "
                    "the download_images folder of URL images (required for JSON input; default "
                    "for tables: the input's folder).")
flags.DEFINE_string("out", None, "Output dataset folder (absent or empty).", required=True)
flags.DEFINE_string("lang", None, "Language code of the records, e.g. eu or en.", required=True)
flags.DEFINE_float("max_bad_fraction", 0.0, "Skip bad records up to this fraction of all records "
                   "(0: stop at the first).")
flags.DEFINE_string("name", None, "Dataset name (default: the input's stem + '_' + lang).")
flags.DEFINE_string("columns", None, "Tables: KEY=COLUMN pairs naming the columns of a record: "
                    "question and answer, or caption, or messages; plus image and id, e.g. "
                    "question=question,answer=answer,image=image_url.")
flags.DEFINE_string("split", None, "Tables: the split to read (a folder holding several splits "
                    "needs one, e.g. eu).")
flags.DEFINE_string("caption_prompt", None, "Tables with a caption column: the user's request "
                    "for the caption (default for eu and en: the demo's 'Deskribatu irudia.' / "
                    "'Describe the image.').")
FLAGS = flags.FLAGS

TABLE_FLAGS = ("columns", "split", "caption_prompt")


def _summary() -> dict:
    options = {"name": FLAGS.name, "max_bad_fraction": FLAGS.max_bad_fraction,
               "progress": lambda line: print(line, flush=True)}
    if not tables.is_table(FLAGS.input):
        given = [f"--{f}" for f in TABLE_FLAGS if FLAGS[f].value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for parquet or Arrow input, not JSON")
        if FLAGS.image_root is None:
            raise ValueError("--image_root is required for JSON input")
        return sources.prepare(FLAGS.input, FLAGS.image_root, FLAGS.out, FLAGS.lang, **options)
    if FLAGS.columns is None:
        raise ValueError("--columns is required for parquet or Arrow input, e.g. "
                         "--columns=question=question,answer=answer,image=image")
    return sources.prepare_table(FLAGS.input, FLAGS.out, FLAGS.lang,
                                 ColumnMap.parse(FLAGS.columns), split=FLAGS.split,
                                 image_root=FLAGS.image_root, caption_prompt=FLAGS.caption_prompt,
                                 **options)


def _prepare() -> None:
    try:
        summary = _summary()
    except sources.BadRecords as e:
        print(json.dumps(e.summary), flush=True)
        raise
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    cli.start("prepare_data", _prepare)
