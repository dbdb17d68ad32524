"""The model container's image (endpoint/Dockerfile) holds every module its server imports from this repository, where
Python finds it, and the layer's modules it imports need no AWS SDK. A module listed by hand in a COPY line is
forgotten by the next refactor that adds one; the image then fails at start-up, which no other test sees."""

from __future__ import annotations

import ast
import re
import shlex
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "endpoint" / "Dockerfile"
LAYER = "layers/common/python"  # the layer's root: the ``infery`` package is imported from here
SDK = {"boto3", "botocore"}


def _copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """Each COPY instruction from the build context: its sources and its destination."""
    copies = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY":
            continue
        arguments = [word for word in words[1:] if not word.startswith("--")]
        if any(word.startswith("--from") for word in words[1:]):
            continue
        copies.append((arguments[:-1], arguments[-1]))
    return copies


def _python_path(dockerfile: str) -> str:
    found = re.search(r"\bPYTHONPATH=(\S+)", dockerfile)
    assert found, "the Dockerfile sets no PYTHONPATH"
    return found.group(1).rstrip("/")


def _matches(pattern: str, path: str) -> bool:
    """Docker's source patterns (Go's filepath.Match): a wildcard never crosses a '/'."""
    pattern_parts, path_parts = PurePosixPath(pattern).parts, PurePosixPath(path).parts
    return len(pattern_parts) == len(path_parts) and all(map(fnmatchcase, path_parts, pattern_parts))


def landing_places(path: str, copies: list[tuple[list[str], str]], root: Path = ROOT) -> set[str]:
    """Where a file of the repository (a path from its root) ends up in the image."""
    places = set()
    for sources, destination in copies:
        for source in sources:
            source = source.rstrip("/")
            if (root / source).is_dir() and path.startswith(source + "/"):
                # a directory's contents are copied into the destination, recursively
                places.add(str(PurePosixPath(destination) / PurePosixPath(path).relative_to(source)))
            elif _matches(source, path):
                into_folder = destination.endswith("/") or len(sources) > 1 or any(c in source for c in "*?[")
                places.add(str(PurePosixPath(destination) / PurePosixPath(path).name) if into_folder else destination)
    return places


def _imported_modules(tree: ast.Module, package: str | None) -> set[str]:
    """Every module a file imports, at its top or inside a function (a lazy import is still needed at run time);
    ``from x import y`` also names ``x.y``, which may be a module."""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert package, "a relative import outside a package"
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


def _layer_files(module: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """The files importing an ``infery`` module runs, each with its package: each package's ``__init__`` on the way,
    then the module's own file (past it, the names are the module's attributes)."""
    parts = module.split(".")
    files = []
    for depth in range(1, len(parts) + 1):
        package, base = ".".join(parts[:depth]), "/".join([LAYER, *parts[:depth]])
        if (root / base / "__init__.py").is_file():
            files.append((f"{base}/__init__.py", package))
            continue
        if (root / f"{base}.py").is_file():
            files.append((f"{base}.py", package.rpartition(".")[0]))
        break
    return files


def files_the_server_needs(root: Path = ROOT) -> dict[str, set[str]]:
    """Each file of the repository the model server imports, directly or through another (endpoint/*.py and the
    ``infery`` modules), with the imports of each; paths from the repository's root."""
    needed: dict[str, set[str]] = {}
    queue: list[tuple[str, str | None]] = [
        (str(path.relative_to(root)), None) for path in sorted((root / "endpoint").glob("*.py"))
    ]
    while queue:
        path, package = queue.pop()
        if path in needed:
            continue
        imports = _imported_modules(ast.parse((root / path).read_text()), package)
        needed[path] = imports
        for module in imports:
            top = module.split(".")[0]
            if top == "infery":
                queue.extend(_layer_files(module, root))
            elif module == top and (root / "endpoint" / f"{top}.py").is_file():
                queue.append((f"endpoint/{top}.py", None))
    return needed


def _expected_place(path: str, python_path: str) -> str:
    """Where Python, run with the image's PYTHONPATH, looks for a file: endpoint/ and the layer are its roots."""
    relative = path.removeprefix("endpoint/") if path.startswith("endpoint/") else path.removeprefix(LAYER + "/")
    return f"{python_path}/{relative}"


def test_the_image_holds_every_module_the_server_imports_where_python_finds_it() -> None:
    dockerfile = DOCKERFILE.read_text()
    copies, python_path = _copies(dockerfile), _python_path(dockerfile)
    needed = files_the_server_needs()
    assert "endpoint/whisper_server.py" in needed and f"{LAYER}/infery/__init__.py" in needed
    missing = {
        path: sorted(landing_places(path, copies))
        for path in needed
        if _expected_place(path, python_path) not in landing_places(path, copies)
    }
    assert not missing, f"not copied where {python_path} finds it (file: where it lands): {missing}"
    assert f"{python_path}/serve" in landing_places("endpoint/serve", copies)  # the command SageMaker runs


def test_the_layer_modules_the_server_imports_need_no_aws_sdk() -> None:
    layer_imports = {path: imports for path, imports in files_the_server_needs().items() if path.startswith(LAYER)}
    assert layer_imports, "the server imports its inference contract from the layer"
    needing_the_sdk = {path for path, imports in layer_imports.items() if {m.split(".")[0] for m in imports} & SDK}
    assert not needing_the_sdk
    package = (ROOT / LAYER / "infery" / "__init__.py").read_text()
    assert not _imported_modules(ast.parse(package), "infery"), "importing any infery module runs its __init__"


# --- the checks themselves, on made-up repositories and Dockerfiles --------------------------------------------


def _repository(tmp_path: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return tmp_path


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return _repository(
        tmp_path,
        {
            "endpoint/server.py": "import json\nfrom engine import run\nfrom infery.domain.contract import Request\n",
            "endpoint/engine.py": "def run():\n    import windows\n",
            "endpoint/windows.py": "",
            "endpoint/serve": "",
            f"{LAYER}/infery/__init__.py": "",
            f"{LAYER}/infery/domain/__init__.py": "",
            f"{LAYER}/infery/domain/contract.py": "from .ids import new_id\n",
            f"{LAYER}/infery/domain/ids.py": "",
            f"{LAYER}/infery/stores.py": "import boto3\n",
        },
    )


def test_the_server_needs_its_siblings_lazy_imports_included_and_the_layer_modules_it_reaches(repository) -> None:
    assert set(files_the_server_needs(repository)) == {
        "endpoint/server.py",
        "endpoint/engine.py",
        "endpoint/windows.py",
        f"{LAYER}/infery/__init__.py",
        f"{LAYER}/infery/domain/__init__.py",
        f"{LAYER}/infery/domain/contract.py",
        f"{LAYER}/infery/domain/ids.py",
    }


def test_a_module_listed_by_hand_is_where_a_new_one_goes_missing(repository) -> None:
    by_hand = _copies(
        f"COPY {LAYER}/infery/__init__.py {LAYER}/infery/domain/contract.py /opt/program/infery/\n"
        "COPY endpoint/server.py \\\n    endpoint/engine.py endpoint/serve /opt/program/\n"
    )
    assert landing_places("endpoint/engine.py", by_hand, repository) == {"/opt/program/engine.py"}
    assert landing_places("endpoint/windows.py", by_hand, repository) == set()
    # a module moved into a subpackage lands one folder too high when its file is listed
    assert landing_places(f"{LAYER}/infery/domain/contract.py", by_hand, repository) == {
        "/opt/program/infery/contract.py"
    }


def test_a_copied_folder_and_a_pattern_put_every_module_where_python_finds_it(repository) -> None:
    whole = _copies(f"COPY {LAYER}/infery /opt/program/infery/\nCOPY endpoint/*.py endpoint/serve /opt/program/\n")
    for path in files_the_server_needs(repository):
        assert landing_places(path, whole, repository) == {_expected_place(path, "/opt/program")}
    assert landing_places("endpoint/serve", whole, repository) == {"/opt/program/serve"}
    assert landing_places("endpoint/sub/engine.py", whole, repository) == set()  # '*' stays in its folder
