"""`gatedrnn data ...`: verify, summarise and download the data files (gatedrnn.data).

    gatedrnn data verify   [--data-dir D] [--mirror URL] [--json]
    gatedrnn data stats    [DATASET ...] [--data-dir D] [--format auto|mat|pickle] [--width 88|paper]
    gatedrnn data download [DATASET ...] [--mirror URL] [--data-dir D] [--format auto|mat|pickle|all]

Exit codes: 0 fine, 1 a checksum mismatch (verify), 2 a data error (one line on stderr).
"""
from __future__ import annotations

import json
import sys

from ..data import DataError, canonical_name, load_dataset, prefix_of
from ..data.music import MUSIC_SETS, dataset_stats, format_stats_table
from ..data.sources import KNOWN_FILES, ChecksumError, DataNotFoundError, find_or_fetch, verify
from ..data.speech import find_fsdd, format_speech_stats, fsdd_verify_row, speech_stats
from ..config import TrainConfig
from .options import TRAIN_RENAME, add_config_flags

__all__ = ["add_data_commands"]

MUSIC = tuple(MUSIC_SETS)


def _subcommand(sub, name: str, func, *, datasets: bool = False, json_rows: bool = False, **kw):
    """A `data` subcommand with the flags every one takes: [DATASET ...], where the data are, the mirror."""
    p = sub.add_parser(name, **kw)
    if datasets:
        p.add_argument("datasets", nargs="*", metavar="DATASET", help=f"default: {' '.join(MUSIC)}")
    p.add_argument("--data-dir", help="folder holding the data files (default: env GATEDRNN_DATA_DIR, "
                                      "then the download cache)")
    p.add_argument("--mirror", help="base URL tried first for downloads, as <URL>/<filename> "
                                    "(or env GATEDRNN_MIRROR)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="accept files that have no known checksum (reported as 'unverified')")
    if json_rows:
        p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=func)
    return p


def add_data_commands(subparsers) -> None:
    p = subparsers.add_parser("data", help="verify / stats / download the datasets",
                              description="Find, download and check the data files (see docs/DATA.md).")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    v = _subcommand(sub, "verify", cmd_verify, json_rows=True, help="checksum every known file found locally",
                    description="List every registered file with its status: ok, missing, mismatch or "
                                "unverified. With --mirror (or --download), missing files are downloaded "
                                "first. Exit code 1 if any file mismatches.")
    v.add_argument("--download", action="store_true", help="download missing files before checking")
    v.add_argument("--dataset", action="append", help="only this dataset's files (repeatable)")

    s = _subcommand(sub, "stats", cmd_stats, datasets=True, json_rows=True,
                    help="print the statistics table of music (and speech) datasets")
    add_config_flags(s, TrainConfig, ("data_format", "width"), rename=TRAIN_RENAME, keep_defaults=True)
    s.add_argument("--no-download", action="store_true", help="never download")

    d = _subcommand(sub, "download", cmd_download, datasets=True,
                    help="download (and verify) the files of datasets into the cache")
    d.add_argument("--format", default="auto", choices=["auto", "mat", "pickle", "all"],
                   help="auto/mat: the .mat files; pickle: the original pickles; all: both")


def _guard(fn):
    def run(args) -> int:
        try:
            return int(fn(args) or 0)
        except DataError as e:
            msg = " ".join(str(e).split())
            print(f"gatedrnn data: error: {msg}", file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@_guard
def cmd_verify(args) -> int:
    datasets = None
    if args.dataset:
        datasets = set()
        for n in args.dataset:
            try:
                datasets.add(canonical_name(n))
            except Exception:
                datasets.add(n)
    rows = verify(args.data_dir, datasets=datasets)
    # "prefix:FOLDER" datasets (wav:, midi:) are the user's own files: nothing registered to check
    notes = [f"{n}: your own folder, no registered checksums (each run records its files' sha256)"
             for n in sorted(datasets or ()) if prefix_of(n)]
    speech = datasets is None or bool(datasets & {"fsdd-a", "fsdd-b", "fsdd"})  # speech: one FSDD summary row
    if speech:
        rows.append(fsdd_verify_row(args.data_dir))
        if (args.mirror or args.download) and rows[-1]["status"] == "missing":
            try:
                find_fsdd(args.data_dir, True, args.mirror)
            except DataError as e:
                notes.append(" ".join(str(e).split()))
            rows[-1] = fsdd_verify_row(args.data_dir)
    if args.mirror or args.download:
        for r in rows:
            if r["status"] != "missing":
                continue
            kf = KNOWN_FILES[r["file"]]
            if kf.sha256 is None and not args.allow_unverified:
                notes.append(f"{r['file']}: not downloaded (no known checksum; pass --allow-unverified)")
                continue
            try:
                find_or_fetch(r["file"], args.data_dir, True, args.mirror, allow_unverified=args.allow_unverified)
            except ChecksumError as e:
                notes.append(" ".join(str(e).split()))
            except DataNotFoundError as e:
                notes.append(" ".join(str(e).split()))
        rows = verify(args.data_dir, datasets=datasets) + rows[-1:] * speech
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'status':10s} {'dataset':11s} {'file':24s} path")
        for r in rows:
            extra = ""
            if r["status"] == "mismatch":
                extra = f"  (expected {r['expected']}, got {r['actual']})"
            elif r["status"] == "unverified":
                extra = f"  (no known checksum; sha256 {r['actual']})"
            elif r["status"] == "ok" and r["checksum_source"] == "third-party":
                extra = "  (matches a third-party reported checksum)"
            print(f"{r['status']:10s} {r['dataset']:11s} {r['file']:24s} {r['path'] or '-'}{extra}")
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    return 1 if any(r["status"] == "mismatch" for r in rows) else 0


@_guard
def cmd_stats(args) -> int:
    names = [canonical_name(n) for n in (args.datasets or MUSIC)]
    all_rows, blocks, speech_rows = [], [], []
    for n in names:
        ds = load_dataset(n, args.data_dir, fmt=args.data_format, width=args.width, download=not args.no_download,
                          mirror=args.mirror, allow_unverified=args.allow_unverified)
        if ds.kind == "speech":  # sequences/steps/samples/seconds per split (gatedrnn.data.speech)
            speech_rows += speech_stats(ds)
            continue
        if ds.kind != "music":
            raise DataError(f"'data stats' summarises music datasets; {n!r} is {ds.kind}")
        rows = dataset_stats(ds)
        for r in rows:
            r["file"] = ds.meta.get("source_file")
            r["format"] = ds.meta.get("format")
            if prefix_of(n):
                r.update(frames=ds.meta.get("frame_rate_note"), split_rule=ds.meta.get("split_rule"),
                         skipped=len(ds.meta.get("skipped", [])))
        all_rows += rows
        blocks.append(rows)
    if args.json:
        print(json.dumps(all_rows + speech_rows, indent=2))
        return 0
    if speech_rows:
        print(format_speech_stats(speech_rows) + ("\n" if blocks else ""))
    if not blocks:
        return 0
    print(format_stats_table([r for b in blocks for r in b]))
    print()
    for b in blocks:
        r = b[-1]
        print(f"{r['dataset']}: read {r['file']} ({r['format']}), width {args.width}; "
              f"largest number of notes in one step: {r['max_notes_per_step']}")
        if r.get("split_rule"):  # a folder of the user's own files (midi:FOLDER): how it was cut
            print(f"  {r['frames']}; split {r['split_rule']}; {r['skipped']} file(s) skipped")
    return 0


@_guard
def cmd_download(args) -> int:
    names = [canonical_name(n) for n in (args.datasets or MUSIC)]
    wanted = {"auto": ("mat",), "mat": ("mat",), "pickle": ("pickle",), "all": None}[args.format]
    todo = [kf for kf in KNOWN_FILES.values()
            if kf.dataset in names and (wanted is None or kf.fmt in wanted)]
    if not todo and args.format in ("auto", "all"):  # datasets without .mat files (e.g. speech)
        todo = [kf for kf in KNOWN_FILES.values() if kf.dataset in names]
    status = 0
    for n in filter(prefix_of, names):
        print(f"local    {n}: your own folder, nothing to download")
    if {"fsdd-a", "fsdd-b"} & set(names):  # speech: FSDD's archive, every wav checked against the manifest
        print(f"ok       fsdd/*.wav: {find_fsdd(args.data_dir, True, args.mirror)}")
    for kf in todo:
        if kf.sha256 is None and not args.allow_unverified:
            print(f"skipped  {kf.filename}: no known checksum (pass --allow-unverified to download it anyway)")
            continue
        path = find_or_fetch(kf.filename, args.data_dir, True, args.mirror, allow_unverified=args.allow_unverified)
        tag = "ok" if kf.sha256 else "unverified"
        print(f"{tag:9s}{kf.filename}: {path}")
    return status

