"""Preparing our TFDS builders from local files (no downloads): one prepared copy per source."""

import hashlib
import os

import tensorflow_datasets as tfds


def prepared(builder_class, source, data_dir=None):
    """Returns builder_class prepared from `source` (a file or folder given as TFDS's manual_dir).

    Without data_dir, each source path gets its own folder under ~/tensorflow_datasets, so that
    pointing at other files never reads stale records."""
    if data_dir is None:
        key = hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:10]
        data_dir = os.path.join(os.path.expanduser("~/tensorflow_datasets"), f"toolkit-{key}")
    builder = builder_class(data_dir=data_dir)
    if not builder.is_prepared():
        # One line instead of TFDS's progress bars, which would bury the CLI's one-line errors on stderr.
        print(f"preparing {source} as a TFDS dataset in {data_dir} (first use only)", flush=True)
        tfds.disable_progress_bar()
    manual_dir = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
