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


def test_package_never_imports_sentence_transformers():
    sources = (REPO / "platform" / "embedlab").rglob("*.py")
    offenders = [str(path) for path in sources if "import sentence_transformers" in path.read_text() or "from sentence_transformers" in path.read_text()]
    assert offenders == []
