import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_import_resolves_to_the_standard_library_from_the_repository_root():
    # The source folder is named platform/; torch and ray import the stdlib module of that name.
    assert not (REPO / "platform" / "__init__.py").exists()
    code = "import platform; print(platform.__file__); print(platform.python_version())"
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    module_file = output.splitlines()[0]
    assert Path(module_file).parent == Path(sysconfig.get_paths()["stdlib"])


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_package_never_imports_sentence_transformers():
    # Import statements only: the model card's usage example mentions sentence_transformers in a string.
    sources = (REPO / "platform" / "embedlab").rglob("*.py")
    offenders = [str(path) for path in sources if "sentence_transformers" in _imported_modules(path)]
    assert offenders == []
