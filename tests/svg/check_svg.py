#!/usr/bin/env python3
"""Parses an SVG file written by ctnn with Python's own XML parser and counts what it draws.

    check_svg.py FILE [--points CLASS=N ...] [--cells N] [--text SUBSTRING ...]

--points: the polyline of that class has N points; --cells: N heat-map cells (rect.cell);
--text: some <text> element contains SUBSTRING. Exit status 0 when all hold, 1 otherwise (with
the reason), so a ctest can run it on the files ctnn-train and ctnn-eval write.
"""
import argparse
import sys
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def classes(element):
    return element.get("class", "").split()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--points", action="append", default=[], metavar="CLASS=N")
    parser.add_argument("--cells", type=int)
    parser.add_argument("--text", action="append", default=[])
    args = parser.parse_args()
    try:
        root = ET.parse(args.file).getroot()  # raises on anything that is not well-formed XML
    except (OSError, ET.ParseError) as error:
        sys.exit(f"{args.file}: not a readable XML file: {error}")
    problems = []
    if root.tag != SVG + "svg":
        problems.append(f"the root element is {root.tag}, not an SVG <svg>")
    for spec in args.points:
        cls, want = spec.split("=")
        lines = [e for e in root.iter(SVG + "polyline") if cls in classes(e)]
        if len(lines) != 1:
            problems.append(f"{len(lines)} polylines of class {cls}, expected 1")
            continue
        pairs = lines[0].get("points", "").split()
        for pair in pairs:
            x, y = (float(v) for v in pair.split(","))  # each point a number pair
        if len(pairs) != int(want):
            problems.append(f"polyline {cls} has {len(pairs)} points, expected {want}")
    if args.cells is not None:
        cells = [e for e in root.iter(SVG + "rect") if "cell" in classes(e)]
        if len(cells) != args.cells:
            problems.append(f"{len(cells)} cells, expected {args.cells}")
    texts = ["".join(e.itertext()) for e in root.iter(SVG + "text")]
    for wanted in args.text:
        if not any(wanted in t for t in texts):
            problems.append(f"no text contains {wanted!r}")
    if problems:
        sys.exit(f"{args.file}: " + "; ".join(problems))
    print(f"{args.file}: well-formed SVG; " + ", ".join(args.points + ([f"{args.cells} cells"] if args.cells else []) + args.text))


if __name__ == "__main__":
    main()
