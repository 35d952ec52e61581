"""Build step: generate the gRPC service's Python code from src/stratus/grpc/inference.proto.

Everything else about the package is declared in pyproject.toml. The generated files are not committed
(.gitignore); ``pip install`` (editable or not, so ``make install`` too) writes them next to the .proto
before the package's modules are collected, and tests/grpc/test_proto.py checks that they match it.

One change is made to what protoc writes: the messages go into a descriptor pool of their own instead of
protobuf's default pool. tritonclient.grpc registers the same public names (``inference.ModelInferRequest``
...) in the default pool, and one pool cannot hold two definitions of a name, so a process that imported
both (a test, a notebook that runs a server and a Triton client) would fail at import. The wire format
does not depend on the pool.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
PROTO = "stratus/grpc/inference.proto"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate_grpc(out: Path, src: Path = SRC) -> list[Path]:
    """Run grpcio-tools' protoc on the .proto under ``src``, writing the modules under ``out``."""
    from grpc_tools import protoc  # a build requirement (pyproject [build-system]) and a dev dependency

    include = Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{src}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(src / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {src / PROTO}")
    target = out / Path(PROTO).parent
    module = target / "inference_pb2.py"
    text = module.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"unexpected protoc output in {module}: cannot give its messages their own pool")
    module.write_text(text.replace(_DEFAULT_POOL, _OWN_POOL))
    return [target / name for name in GENERATED]


if __name__ == "__main__":
    from setuptools import setup
    from setuptools.command.build_py import build_py

    class BuildWithGrpc(build_py):
        """Generate into the source tree first, so editable installs see the files as well as wheels."""

        def run(self) -> None:
            generate_grpc(SRC)
            super().run()

    setup(cmdclass={"build_py": BuildWithGrpc})
