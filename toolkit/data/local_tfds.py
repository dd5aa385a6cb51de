"""Preparing our TFDS builders from local files (no downloads): one prepared copy per source."""

import hashlib
import os

from toolkit.errors import ToolkitError


def prepared(builder_class, source, data_dir=None):
    """Returns builder_class prepared from `source` (a file or folder given as TFDS's manual_dir).

    Without data_dir, each source path gets its own folder under ~/tensorflow_datasets, so that
    pointing at other files never reads stale records."""
    import tensorflow_datasets as tfds

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


def prepared_by_name(name, data_dir=None):
    """A TFDS dataset by name that must already be prepared (no downloads here); says how if not."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for unknown names
        raise ToolkitError(f"unknown TFDS dataset {name!r} ({str(e).splitlines()[0]})") from None
    if not os.path.isdir(builder.data_dir) or not builder.info.splits:
        raise ToolkitError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: run `tfds build {name}` on a "
            "machine with internet and copy that folder here (or pass --data-dir)"
        )
    return builder


def splits(builder, validation_fraction=0.1):
    """({"train", "validation", "test": TFDS split spec}, {same keys: number of examples}) of a prepared
    builder; without a validation split, validation is the last `validation_fraction` of train. A
    dataset without a train or a test split is an error naming it."""
    found = set(builder.info.splits)
    if "train" not in found or "test" not in found:
        raise ToolkitError(f"TFDS dataset {builder.info.name!r} needs train and test splits, has {sorted(found)}")
    wanted = {"train": "train", "validation": "validation", "test": "test"}
    if "validation" not in found:
        percent = round(100 * (1 - validation_fraction))
        wanted.update(train=f"train[:{percent}%]", validation=f"train[{percent}%:]")
    return wanted, {k: int(builder.info.splits[s].num_examples) for k, s in wanted.items()}

