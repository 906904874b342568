"""Write README.md from nbs/index.ipynb; with --check, fail if README.md is out of date.

`nbdev_readme` does this job through Quarto, which cannot be installed on this project's machines.
This script renders the same content (markdown cells, visible code cells and their text outputs)
without Quarto, so the README stays generated from the notebook. Where Quarto exists, nbdev_readme
may be used instead; its output differs only in layout.
"""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
notebook = json.loads((root / "nbs" / "index.ipynb").read_text(encoding="utf-8"))


def text_of(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def render() -> str:
    blocks = ["<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->"]
    for cell in notebook["cells"]:
        source = text_of(cell["source"]).strip("\n")
        if cell["cell_type"] == "markdown":
            # links between notebooks are relative to nbs/; from the repository root they need the prefix
            source = re.sub(r"\]\((?!https?:|#|/)(images/[^)]+)\)", r"](nbs/\1)", source)  # pictures too
            blocks.append(re.sub(r"\]\((?!https?:|#|/)([^)]+\.ipynb)\)", r"](nbs/\1)", source))
            continue
        if cell["cell_type"] != "code":
            continue
        directives = [line for line in source.split("\n") if line.startswith("#|")]
        if any("hide" in line or "include: false" in line for line in directives):
            continue
        if any("echo: false" in line for line in directives):  # a figure cell: the README shows the file it saves
            saved = re.search(r'savefig\("(images/[^"]+)"', source)
            if saved:
                blocks.append(f"![Unified Latents at a glance](nbs/{saved[1]})")
            continue
        code = "\n".join(line for line in source.split("\n") if not line.startswith("#|")).strip("\n")
        if code:
            blocks.append(f"```python\n{code}\n```")
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                outputs.append(text_of(output["text"]))
            elif "data" in output and "text/plain" in output["data"]:
                outputs.append(text_of(output["data"]["text/plain"]) + "\n")
        if outputs:
            blocks.append("```\n" + "".join(outputs).rstrip("\n") + "\n```")
    return "\n\n".join(blocks) + "\n"


if __name__ == "__main__":
    readme = root / "README.md"
    content = render()
    if "--check" in sys.argv[1:]:
        if not readme.exists() or readme.read_text(encoding="utf-8") != content:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py` and commit it.")
        print("README.md matches nbs/index.ipynb")
    else:
        readme.write_text(content, encoding="utf-8")
        print(f"wrote {readme.relative_to(root)}")
