"""Rebuilds the demo upstream corpus from the Python standard library's own English text.

    python -m forgetting_jax.data.demo.build_corpus [--output PATH] [--families email,json]

Sources (Python Software Foundation License, see resources/LICENSE-demo-corpus.txt):
  - the docstrings of public modules, classes and functions of the standard library, read with
    `ast` from the source files (nothing is imported), each a record
    {"id": "email.message.Message.get_payload", "text": "def ...(...)\n\n<docstring>",
     "source": "email"} whose source is the module family (FAMILIES);
  - the language reference topics of `pydoc_data.topics`, source "reference".

The committed file resources/demo_corpus.jsonl.gz is the source of truth: docstrings change between
Python versions, so the snapshot (made with the version recorded in demo_corpus.meta.json) is what
every run reads. Rebuilding with the same Python gives the same bytes (sorted walk, gzip mtime 0).
"""

import argparse
import ast
import gzip
import hashlib
import io
import json
import os
import sys
import sysconfig

from forgetting_jax.utils.io import atomic_path, write_json, write_text

MIN_DOC_CHARS = 60
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings", "lib-dynload"}

# Top-level modules grouped into families; packages not listed here are their own family.
FAMILIES = {
    "numeric": "_pydecimal decimal fractions statistics random numbers cmath math secrets",
    "text": "re sre_compile sre_constants sre_parse difflib textwrap string stringprep codecs "
            "unicodedata shlex pprint reprlib",
    "files": "os shutil pathlib glob fnmatch tempfile fileinput filecmp stat posixpath ntpath "
             "genericpath io _pyio linecache",
    "archive": "tarfile zipfile gzip bz2 lzma zipimport zipapp _compression",
    "net": "socket ssl socketserver smtplib smtpd imaplib nntplib ftplib poplib telnetlib ipaddress "
           "selectors asyncore asynchat",
    "mail": "mailbox mimetypes mailcap quopri uu base64 binhex cgi cgitb",
    "data": "pickle pickletools _compat_pickle shelve csv configparser plistlib copyreg copy netrc "
            "xdrlib struct dbm tomllib sqlite3",
    "runtime": "threading _threading_local subprocess signal sched queue contextvars "
               "_bootsubprocess",
    "devtools": "doctest pdb bdb traceback inspect ast dis tokenize token pyclbr code codeop cmd "
                "timeit trace profile cProfile pstats pydoc tabnanny py_compile compileall symtable "
                "keyword rlcompleter tracemalloc warnings opcode",
    "types": "typing enum functools contextlib dataclasses abc _py_abc _collections_abc types "
             "operator weakref _weakrefset heapq bisect graphlib collections",
    "cli": "argparse optparse getopt",
    "media": "wave aifc sunau chunk colorsys imghdr sndhdr audioop",
    "time": "datetime _strptime calendar zoneinfo",
    "system": "platform site _sitebuiltins sysconfig locale gettext getpass pty tty pkgutil runpy "
              "modulefinder webbrowser imp _osx_support _aix_support crypt pipes uuid hashlib hmac "
              "__future__ curses venv ensurepip antigravity",
    "markup": "xml html _markupbase",
    "urllib": "urllib nturl2path",
    "turtle": "turtle turtledemo",
}
FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names.split()}


def family_of(module: str) -> str:
    """The source label of a dotted module name."""
    top = module.split(".")[0]
    return FAMILY_OF.get(top, top)


def _module_files(stdlib: str) -> list[tuple[str, str]]:
    """(dotted module name, path) of every standard-library source file, in sorted order."""
    found = []
    for directory, subdirs, names in os.walk(stdlib):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and "-" not in d)
        rel = os.path.relpath(directory, stdlib)
        package = [] if rel == "." else rel.split(os.sep)
        for name in sorted(names):
            if not name.endswith(".py") or "-" in name or name.startswith("_sysconfigdata"):
                continue
            parts = package + ([] if name == "__init__.py" else [name[:-3]])
            if parts:
                found.append((".".join(parts), os.path.join(directory, name)))
    return sorted(found)


def _definitions(node: ast.AST, prefix: str):
    """(kind, dotted name, node) of the public classes and functions under `node`, in source order."""
    for child in getattr(node, "body", []):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if child.name.startswith("_"):
                continue
            name = f"{prefix}.{child.name}"
            kind = "class" if isinstance(child, ast.ClassDef) else "def"
            yield kind, name, child
            if kind == "class":
                yield from _definitions(child, name)


def module_records(module: str, source: bytes) -> list[dict]:
    """The docstring records of one module's source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    records = []
    family = family_of(module)
    doc = ast.get_docstring(tree)
    if doc and len(doc) >= MIN_DOC_CHARS:
        records.append({"id": module, "text": f"module {module}\n\n{doc}", "source": family})
    for kind, name, node in _definitions(tree, module):
        doc = ast.get_docstring(node)
        if not doc or len(doc) < MIN_DOC_CHARS:
            continue
        header = f"class {name}" if kind == "class" else f"def {name}({ast.unparse(node.args)})"
        records.append({"id": name, "text": f"{header}\n\n{doc}", "source": family})
    return records


def reference_records() -> list[dict]:
    """The language reference topics shipped for `help()`."""
    from pydoc_data import topics

    return [{"id": f"reference.{key}", "text": topics.topics[key].strip(), "source": "reference"}
            for key in sorted(topics.topics) if topics.topics[key].strip()]


def build_records(stdlib: str | None = None, families: set[str] | None = None,
                  with_reference: bool = True) -> list[dict]:
    """All corpus records, in a fixed order, with unique ids (first definition wins)."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    records, seen = [], set()
    for module, path in _module_files(stdlib):
        if families is not None and family_of(module) not in families:
            continue
        with open(path, "rb") as f:
            source = f.read()
        for record in module_records(module, source):
            if record["id"] not in seen:
                seen.add(record["id"])
                records.append(record)
    if with_reference and (families is None or "reference" in families):
        records += reference_records()
    return records


def write_corpus(records: list[dict], path: str) -> str:
    """Writes gzip JSON lines with a fixed header (no name, mtime 0); returns the sha256."""
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as f:
        f.write(body)
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return hashlib.sha256(data).hexdigest()


LICENSE_HEADER = """Demo corpus: provenance and licence
====================================

forgetting_jax/resources/demo_corpus.jsonl.gz holds the docstrings of the public modules, classes
and functions of the Python {version} standard library and the language reference topics of its
pydoc_data package, extracted by forgetting_jax/data/demo/build_corpus.py. The demo tokenizer in
forgetting_jax/resources/demo_tokenizer/ is trained on that text. Both are derived from Python,
which is distributed under the Python Software Foundation License reproduced below.

Copyright (c) 2001 Python Software Foundation. All rights reserved.

"""


def write_license(resources: str, stdlib: str) -> None:
    with open(os.path.join(stdlib, "LICENSE.txt"), encoding="utf-8") as f:
        licence = f.read()
    version = ".".join(map(str, sys.version_info[:3]))
    write_text(os.path.join(resources, "LICENSE-demo-corpus.txt"),
               LICENSE_HEADER.format(version=version) + licence)


def main(argv: list[str] | None = None) -> None:
    from forgetting_jax.data.demo import resources_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(resources_dir(), "demo_corpus.jsonl.gz"))
    parser.add_argument("--families", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args(argv)
    stdlib = sysconfig.get_paths()["stdlib"]
    families = set(args.families.split(",")) if args.families else None
    records = build_records(stdlib, families)
    digest = write_corpus(records, args.output)
    meta = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "records": len(records),
        "chars": sum(len(r["text"]) for r in records),
        "sources": sorted({r["source"] for r in records}),
        "sha256": digest,
    }
    write_json(args.output.removesuffix(".jsonl.gz") + ".meta.json", meta)
    written = [args.output, args.output.removesuffix(".jsonl.gz") + ".meta.json"]
    if families is None:
        write_license(os.path.dirname(os.path.abspath(args.output)), stdlib)
        written.append(os.path.join(os.path.dirname(os.path.abspath(args.output)), "LICENSE-demo-corpus.txt"))
    for path in written:
        os.chmod(path, 0o644)  # package data: readable by everyone once installed
    print(f"wrote {args.output}: {meta['records']} records, {meta['chars']} chars, "
          f"{len(meta['sources'])} sources, sha256 {digest[:16]}")


if __name__ == "__main__":
    main()
