"""Download the images of a URL dataset (PixMo, CC3M) once, verified, for ``prepare_data``.

    python -m basque_vlm.download_images --input=pixmo-ask-model-anything/ \\
        --url_column=image_url --sha256_column=image_sha256 --out=images/pixmo \\
        [--concurrency=16] [--timeout=30] [--retries=3] [--split=train]

``--input`` is a table as ``prepare_data`` reads it (parquet file or folder, Arrow, save_to_disk).
Each distinct URL is fetched once into ``--out`` (``images/`` and ``manifest.jsonl``: see
`basque_vlm.data.image_store`), its SHA-256 checked where the dataset gives one and its bytes
decoded; failures are recorded by kind (``http_404``, ``http_5xx``, ``timeout``, ``connection``,
``checksum``, ``not_an_image``, ...) and counted, never fatal. Run it again, after a kill or to go
on, and it fetches only what is not there yet (``--retry_failed``: also the URLs that failed with
a timeout, a connection error or a server error). Progress lines go to stdout; the last stdout
line is the JSON summary (``rows``, ``downloaded``, ``already_there``, ``failed``,
``failed_by_kind``, ...). Then ``prepare_data --image_root=OUT`` reads the images from there.
"""

from __future__ import annotations

import json

from absl import flags

from basque_vlm.data import download
from basque_vlm.runtime import cli

flags.DEFINE_string("input", None, "A parquet file or folder (a hub snapshot), an .arrow file or "
                    "a datasets save_to_disk folder.", required=True)
flags.DEFINE_string("url_column", None, "The column holding the image URLs.", required=True)
flags.DEFINE_string("sha256_column", None, "The column holding each image's SHA-256 (hex), if "
                    "the dataset gives one.")
flags.DEFINE_string("out", None, "The images folder (created; an earlier run's is resumed).",
                    required=True)
flags.DEFINE_string("split", None, "The split to read, where the input holds several.")
flags.DEFINE_integer("concurrency", 16, "Requests in flight at once.")
flags.DEFINE_float("timeout", 30.0, "Seconds for one try: connecting and receiving the whole "
                   "image.")
flags.DEFINE_integer("retries", 3, "Tries again after a timeout, a connection error, HTTP 5xx, "
                     "408 or 429.")
flags.DEFINE_float("backoff", 1.0, "Seconds before the first retry, doubled after each.")
flags.DEFINE_bool("retry_failed", False, "Also fetch again the URLs that failed in an earlier "
                  "run with a timeout, a connection error or HTTP 5xx.")
FLAGS = flags.FLAGS


def _download() -> None:
    summary = download.download(
        FLAGS.input, FLAGS.url_column, FLAGS.out, sha256_column=FLAGS.sha256_column,
        split=FLAGS.split, concurrency=FLAGS.concurrency, timeout=FLAGS.timeout,
        retries=FLAGS.retries, backoff=FLAGS.backoff, retry_failed=FLAGS.retry_failed,
        progress=lambda line: print(line, flush=True))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    cli.start("download_images", _download)
