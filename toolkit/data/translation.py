"""Sentence pairs for translation: one shape for every source, tokenised in tf.data like every text task.

Sources: `numbers_fr` (the embedded default: English -> French number and date phrases generated
with `num2words` and `babel`), `gettext_fr` (the harder corpus: English -> French user-interface
messages from the gettext catalogues that Debian installs under /usr/share/locale/fr, see
GETTEXT_DOMAINS), `gettext:PATH` (your own `.mo`/`.po` catalogue, or a folder of them), `tfds:NAME`
(a prepared TFDS translation dataset with supervised (source, target) keys, e.g.
`tfds:ted_hrlr_translate/pt_to_en`) and `tsv:PATH` (or a `.tsv`/`.txt` path): one pair a line,
source TAB target, further columns ignored (the Tatoeba/Anki layout).

The numbers corpus is split *by value*: every number or date goes to one split as a whole (with
all its phrasings), so no test number, date or phrase is seen in training. Files and catalogues
are split by normalised source sentence, so no source sentence lands in two splits. Bad input is
named: a line without a tab or with an empty side, bytes that are not UTF-8 (file and line), a
catalogue babel cannot read.
"""

import dataclasses
import datetime
import os
import random

from toolkit.data import local_tfds, prefetched
from toolkit.data.texts import check_text, normalized, split_of
from toolkit.errors import ToolkitError

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TranslationData:
    train: tuple  # (list of source str, list of target str)
    validation: tuple
    test: tuple
    source: str
    languages: tuple = ("source", "target")

    @property
    def sizes(self):
        return {k: len(getattr(self, k)[0]) for k in SPLITS}


def load(source="numbers_fr", data_dir=None, seed=0):
    if source == "numbers_fr":
        return numbers_fr(seed)
    if source == "gettext_fr":
        return gettext_fr()
    if source.startswith("tfds:"):
        return _tfds(source[5:], data_dir)
    if source.startswith("gettext:"):
        return _split(gettext_pairs(_catalogue_files(source[8:])), source)
    kind, sep, path = source.partition(":")
    if not (sep and kind == "tsv"):
        kind, path = os.path.splitext(source)[1].lstrip(".").lower(), source
    if kind in ("tsv", "txt"):
        return _split(read_pairs(path), source)
    raise ToolkitError(
        f"unknown translation data source {source!r}; use numbers_fr, gettext_fr, gettext:PATH, tfds:NAME or tsv:PATH"
    )


def numbers_fr(seed=0):
    """English -> French phrases for cardinals, ordinals, years, euro amounts and dates, split by value."""
    from babel.dates import format_date
    from num2words import num2words

    rng = random.Random(seed)
    groups = {}  # (kind, value) -> [(english, french)]: one value, one split

    def add(kind, value, english, french):
        groups.setdefault((kind, value), []).append((english, french))

    for n in range(10000):
        add("cardinal", n, num2words(n), num2words(n, lang="fr"))
    for n in range(1, 2001):
        add("ordinal", n, num2words(n, to="ordinal"), num2words(n, lang="fr", to="ordinal"))
        add("ordinal", n, f"the {num2words(n, to='ordinal')} day", f"le {num2words(n, lang='fr', to='ordinal')} jour")
    for year in range(1000, 2100):
        add("year", year, f"in {num2words(year, to='year')}", f"en {num2words(year, lang='fr', to='year')}")
    for cents in rng.sample(range(100 * 10000), 3000):
        euros, cents = divmod(cents, 100)
        if euros < 2 or cents == 0:  # "zero cents" and singular/plural edge cases: keep the phrasing regular
            continue
        amount = euros + cents / 100
        add("currency", (euros, cents), num2words(amount, to="currency", currency="EUR"),
            num2words(amount, lang="fr", to="currency", currency="EUR"))  # fmt: skip
    start = datetime.date(1900, 1, 1).toordinal()
    for day in rng.sample(range(start, datetime.date(2099, 12, 31).toordinal()), 3000):
        date = datetime.date.fromordinal(day)
        add("date", day, format_date(date, "long", locale="en"), format_date(date, "long", locale="fr"))

    splits = {k: [] for k in SPLITS}
    for (kind, value), pairs in groups.items():
        splits[split_of(f"{kind}:{value}")].extend(pairs)
    for pairs in splits.values():
        rng.shuffle(pairs)
    seen = {english for english, _ in splits["train"]}
    assert not any(english in seen for english, _ in splits["test"]), "a test phrase is in the training split"
    return TranslationData(*(_columns(splits[k]) for k in SPLITS), "numbers_fr", ("en", "fr"))


# The French catalogues of the Debian packages on the project's machines (GNU tools, dpkg/apt, git,
# PostgreSQL 15, GTK 2, systemd...): fixed, so the corpus is the same wherever the same packages are.
# The iso-codes catalogues (language and region names) are left out: names, not messages.
GETTEXT_LOCALE_DIR = "/usr/share/locale/fr/LC_MESSAGES"
GETTEXT_DOMAINS = (
    "Linux-PAM", "PackageKit", "adduser", "appstream", "apt", "at-spi2-core", "avahi", "bash", "bfd", "binutils",
    "coreutils", "diffutils", "dpkg", "dpkg-dev", "findutils", "gas", "gdk-pixbuf", "gettext-runtime",
    "gettext-tools", "git", "glib20", "gnupg2", "gnutls30", "gold", "gprof", "grep", "gsettings-desktop-schemas",
    "gstreamer-1.0", "gtk20", "gtk20-properties", "initdb-15", "ld", "libapt-pkg6.0", "libc", "libidn2",
    "libpq5-15", "make", "man-db", "man-db-gnulib", "net-tools", "opcodes", "pg_amcheck-15", "pg_archivecleanup-15",
    "pg_basebackup-15", "pg_checksums-15", "pg_config-15", "pg_controldata-15", "pg_ctl-15", "pg_dump-15",
    "pg_resetwal-15", "pg_rewind-15", "pg_test_fsync-15", "pg_test_timing-15", "pg_upgrade-15", "pg_verifybackup-15",
    "pg_waldump-15", "pgscripts-15", "plpgsql-15", "postgres-15", "procps-ng", "psmisc", "psql-15", "python-apt",
    "sed", "shadow", "shared-mime-info", "software-properties", "systemd", "tar", "wget", "wget-gnulib",
    "xdg-user-dirs", "xkeyboard-config", "xz",
)  # fmt: skip
MAX_MESSAGE_WORDS = 20  # longer messages are usage paragraphs, not sentences


def gettext_fr():
    """English -> French UI messages from the installed catalogues (GETTEXT_DOMAINS), split by source."""
    files = [os.path.join(GETTEXT_LOCALE_DIR, f"{domain}.mo") for domain in GETTEXT_DOMAINS]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ToolkitError(f"gettext_fr needs {len(missing)} French catalogue(s) this machine lacks, e.g. {missing[0]} "
                           "(install the Debian package that owns it, or pass gettext:PATH with your own)")  # fmt: skip
    return _split(gettext_pairs(files), "gettext_fr", ("en", "fr"))


def gettext_pairs(files):
    """[(source, translation)] messages of gettext catalogues (`.mo` or `.po`, read with babel).
    Kept: translated single-line messages of 2..MAX_MESSAGE_WORDS words, without context or plural
    forms, whose translation differs from the source; whitespace (French typography's no-break spaces
    included) becomes single spaces; the first catalogue in `files` order wins a source that several
    translate (one reference per test source)."""
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    pairs = {}
    for path in files:
        try:
            with open(path, "rb") as f:
                catalogue = read_po(f) if path.endswith(".po") else read_mo(f)
        except Exception as e:  # babel raises bare ValueError/IndexError/struct.error on a broken file
            raise ToolkitError(f"{path}: not a readable gettext catalogue ({type(e).__name__}: {e})") from None
        for message in catalogue:
            source, target = message.id, message.string
            if not source or message.context or isinstance(source, (tuple, list)) or not isinstance(target, str):
                continue  # the header, a message with context, or plural forms
            if "\n" in source or "\n" in target or getattr(message, "fuzzy", False):
                continue
            source, target = " ".join(source.split()), " ".join(target.split())
            if not target or target == source or not 2 <= len(source.split()) <= MAX_MESSAGE_WORDS:
                continue
            pairs.setdefault(normalized(source), (source, target))
    if not pairs:
        raise ToolkitError(f"{', '.join(files[:3])}: no translated messages of 2..{MAX_MESSAGE_WORDS} words")
    return list(pairs.values())


def _catalogue_files(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".mo", ".po")))
        if not files:
            raise ToolkitError(f"{path}: no .mo or .po gettext catalogues in this folder")
        return files
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such file")
    if not path.endswith((".mo", ".po")):
        raise ToolkitError(f"{path}: expected a gettext catalogue (.mo or .po) or a folder of them")
    return [path]


def read_pairs(path):
    """Lines `source<TAB>target[<TAB>...]` -> [(source, target)]; every bad line is named."""
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    pairs = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        if not line.strip():
            continue
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ToolkitError(f"{path} line {number}: not valid UTF-8 (byte 0x{line[e.start]:02x})") from None
        fields = line.split("\t")
        if len(fields) < 2:
            raise ToolkitError(f"{path} line {number}: expected source<TAB>target, found no tab")
        pairs.append(tuple(check_text(fields[i], f"{path} line {number} column {i + 1}") for i in (0, 1)))
    if not pairs:
        raise ToolkitError(f"{path}: no sentence pairs")
    return pairs


def split_by_source(pairs):
    """Pairs -> {"train", "validation", "test"} by normalised source, so no source is in two splits
    (a source with several translations keeps them all, in one split)."""
    splits = {k: [] for k in SPLITS}
    for source, target in pairs:
        splits[split_of(normalized(source))].append((source, target))
    for name, items in splits.items():
        if not items:
            raise ToolkitError(f"{len(pairs)} sentence pairs are too few to split: the {name} split is empty")
    return splits


def _split(pairs, source, languages=("source", "target")):
    """TranslationData of [(source, target)] split by normalised source (split_by_source)."""
    splits = split_by_source(pairs)
    return TranslationData(*(_columns(splits[k]) for k in SPLITS), source, languages)


def _columns(pairs):
    return [s for s, _ in pairs], [t for _, t in pairs]


def _tfds(name, data_dir):
    builder = local_tfds.prepared_by_name(name, data_dir)
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2:
        raise ToolkitError(f"TFDS dataset {name!r} has no (source, target) supervised keys")
    available = set(builder.info.splits)
    if not {"train", "test"} <= available:
        raise ToolkitError(f"TFDS dataset {name!r} needs train and test splits, has {sorted(available)}")
    wanted = {"train": "train", "validation": "validation", "test": "test"}
    if "validation" not in available:
        wanted.update(train="train[:95%]", validation="train[95%:]")
    splits = {}
    for split, spec in wanted.items():
        pairs = [(s.decode("utf-8"), t.decode("utf-8"))
                 for s, t in builder.as_dataset(split=spec, as_supervised=True).as_numpy_iterator()]  # fmt: skip
        splits[split] = _columns(pairs)
    return TranslationData(*(splits[k] for k in SPLITS), f"tfds:{name}", tuple(keys))


def vocabularies(data, source_size, target_size):
    """WordPieces from the training split: the source lower-cased and accent-stripped like every text
    task; the target keeps case and accents (they are part of the output) and gets [START], [END]."""
    from toolkit.data import tokenizer

    source = tokenizer.train_vocabulary(data.train[0], source_size)
    target = tokenizer.train_vocabulary(data.train[1], target_size, lowercase=False, strip_accents=False,
                                        reserved_tokens=tokenizer.RESERVED_TOKENS + tokenizer.SEQUENCE_TOKENS)  # fmt: skip
    return source, target


def tokenizers(source_vocabulary, target_vocabulary, source_length):
    from toolkit.data import tokenizer

    return (tokenizer.make(source_vocabulary, source_length),
            tokenizer.make(target_vocabulary, None, lowercase=False, strip_accents=False))  # fmt: skip


def batches(tokenizers, sources, targets, target_length, batch_size, shuffle=False, seed=0):
    """({"source_tokens", "target_tokens": [START] y1..yn}, labels y1..yn [END]) batches, tokenised in
    tf.data; targets longer than target_length - 1 tokens are cut (and lose their [END])."""
    import tensorflow as tf

    from toolkit.data.tokenizer import END_ID as END
    from toolkit.data.tokenizer import START_ID as START

    source_tokenizer, target_tokenizer = tokenizers
    ds = tf.data.Dataset.from_tensor_slices((list(sources), list(targets)))
    if shuffle:
        ds = ds.shuffle(len(sources), seed=seed, reshuffle_each_iteration=True)

    def encode(source, target):
        ids = tf.cast(target_tokenizer(target), tf.int32)
        rows = ids.nrows()
        full = tf.concat([tf.fill([rows, 1], START), ids, tf.fill([rows, 1], END)], axis=1)
        full = full.to_tensor(shape=[None, target_length + 1])
        return {"source_tokens": source_tokenizer(source), "target_tokens": full[:, :-1]}, full[:, 1:]

    ds = ds.batch(batch_size).map(encode, num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(ds)
