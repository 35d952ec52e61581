"""A federation client: a Flower ``ClientApp`` next to its data, reached by the job's server over gRPC.

``join`` (stratus federated join, Client.federated_join) asks the Stratus server for a client token with a
``federated`` key bound to the job, then this module trains: it parses the local file with central training's
parser, keeps a held-out part (``test_split``, central training's split), and answers Flower's messages with a
``NumPyClient`` whose local epochs are central training's loop (training/torch_trainers.run_epochs). Its rows never
leave the process: what it sends are the weights after its local epochs, masked by Flower's SecAgg+ mod unless the
job turned secure aggregation off, and its held-out loss and accuracy.

Differential privacy plugs in through ``mods``: Flower mods run around the client's fit (e.g. Flower's
``fixedclipping_mod`` / ``LocalDpMod``), after training and before the SecAgg+ mod masks the update.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from torch import nn

from stratus.federated import model as fed
from stratus.federated.relay import HEARTBEAT, MAX_MESSAGE, SERVICE
from stratus.training.params import TrainParams
from stratus.training.torch_trainers import run_epochs
from stratus.types import Array

#: A Flower mod: (message, context, next handler) -> reply. DP's clipping and noise are mods.
Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]
#: Told of what the client sends after each local fit (the weights, unmasked): the tests compare it with what the
#: server received. Nothing else uses it.
FitObserver = Callable[[str, list[Array]], None]


@dataclass
class LocalData:
    """The client's rows as the federation's shape wants them: class indices mapped to the job's class list."""

    X_train: Array
    y_train: Array
    X_test: Array
    y_test: Array
    image: bool


def local_data(parsed: Any, shape: fed.Shape, test_split: float, seed: int) -> LocalData:
    """Check the parsed file against the job's shape and split it (central training's split)."""
    from sklearn.model_selection import train_test_split

    from stratus.errors import InvalidInput

    if parsed.y is None:
        raise InvalidInput("the local data has no target column")
    if parsed.task != "classification":
        raise InvalidInput("federated jobs train classifiers; the local data's target is not a class")
    image = parsed.image_shape is not None
    if image != (shape.image_shape is not None):
        raise InvalidInput("the job trains on images" if shape.image_shape else "the job trains on tabular features")
    if image and tuple(parsed.image_shape) != shape.image_shape:
        raise InvalidInput(
            f"the job's images are {list(shape.image_shape or ())}, these are {list(parsed.image_shape)}"
        )
    if not image and parsed.X.shape[1] != shape.features:
        raise InvalidInput(f"the job takes {shape.features} features, the local data has {parsed.X.shape[1]}")
    unknown = sorted(set(parsed.classes) - set(shape.classes))
    if unknown:
        raise InvalidInput(f"classes {unknown[:5]} are not among the job's classes")
    index = np.array([shape.classes.index(c) for c in parsed.classes], dtype=np.int64)
    y = index[np.asarray(parsed.y)]
    rows = np.arange(parsed.rows)
    # Central training's split (training/worker.split, not imported: the SDK reaches this module): seeded, stratified
    # when every class has two rows.
    local = np.asarray(parsed.y)
    stratify = local if np.bincount(local).min() >= 2 else None
    train_rows, test_rows, _, _ = train_test_split(
        rows, local, test_size=test_split, random_state=seed, stratify=stratify
    )
    X = np.asarray(parsed.X, dtype=np.float32)
    return LocalData(X[train_rows], y[train_rows], X[test_rows], y[test_rows], image)


def preprocess_bytes(arrays: list[Array]) -> bytes:
    return b"".join(np.asarray(a, dtype=np.float32).tobytes() for a in arrays)


class FederatedClient(NumPyClient):
    def __init__(
        self,
        name: str,
        model_kind: str,
        shape: fed.Shape,
        params: TrainParams,
        data: LocalData,
        observe: FitObserver | None,
    ) -> None:
        self.name = name
        self.model = fed.build(model_kind, shape, params)
        self.params = params
        self.data = data
        self.observe = observe

    def _load(self, parameters: list[Array], config: dict[str, Any]) -> None:
        fed.set_weights(self.model, parameters)
        raw = config.get("preprocess")
        if isinstance(raw, bytes) and raw:
            flat = np.frombuffer(raw, dtype=np.float32).copy()
            sizes = [
                t.numel()
                for t in (self.model.preprocess.fill, self.model.preprocess.offset, self.model.preprocess.scale)
            ]
            fed.set_preprocess_arrays(self.model, list(np.split(flat, np.cumsum(sizes)[:-1])))

    def get_parameters(self, config: dict[str, Any]) -> list[Array]:
        return fed.weights_of(self.model)

    def fit(self, parameters: list[Array], config: dict[str, Any]) -> tuple[list[Array], int, dict[str, Any]]:
        rows = len(self.data.X_train)
        phase = str(config.get("phase", "train"))
        if phase == "scale":
            return [fed.scale_vector(self.data.X_train, self.data.image)], rows, {}
        if phase == "moments":
            exponents = fed.exponents_from(parameters[0])
            return [fed.moments_vector(self.data.X_train, self.data.image, exponents)], rows, {}
        self._load(parameters, config)
        mu = float(config.get("proximal_mu", 0.0) or 0.0)
        epochs = int(config.get("local_epochs", self.params.epochs))
        self._train(mu, epochs, int(config.get("server_round", 1)))
        weights = fed.weights_of(self.model)
        if self.observe is not None:
            self.observe(self.name, [w.copy() for w in weights])
        return weights, rows, {}

    def _train(self, mu: float, epochs: int, server_round: int) -> None:
        model, data = self.model, self.data
        xs = torch.from_numpy(data.X_train)
        ys = torch.from_numpy(data.y_train)
        anchor = [p.detach().clone() for p in model.body.parameters()]
        loss_fn = nn.CrossEntropyLoss()

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            loss: torch.Tensor = loss_fn(model(xs[index])[0], ys[index])
            if mu > 0:  # FedProx: stay near the round's global weights
                drift = sum(((p - a) ** 2).sum() for p, a in zip(model.body.parameters(), anchor, strict=True))
                loss = loss + mu / 2 * drift
            return loss

        params = self.params.model_copy(update={"epochs": epochs, "patience": None})
        generator = torch.Generator().manual_seed(self.params.seed + server_round)
        run_epochs(model, len(xs), batch_loss, params, lambda _event: None, generator)

    def evaluate(self, parameters: list[Array], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        self._load(parameters, config)
        self.model.eval()
        with torch.no_grad():
            logits, label = self.model(torch.from_numpy(self.data.X_test))
            loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(self.data.y_test)))
        accuracy = float((label.numpy() == self.data.y_test).mean())
        return loss, len(self.data.X_test), {"accuracy": accuracy, "client": self.name}


def client_app(client: FederatedClient, secure: bool, mods: Sequence[Mod] = ()) -> ClientApp:
    """Flower's ClientApp around the client: the DP mods (if any) inside, SecAgg+ outermost, so what is masked is
    the update after clipping and noise."""
    chain = [secaggplus_mod] if secure else []
    return ClientApp(client_fn=lambda _context: client.to_client(), mods=[*chain, *mods])


class RelayConnection:
    """The client's side of the relay (relay.py): Register, then Pull and Push Flower messages."""

    def __init__(self, address: str, client: str, token: str) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        self.channel = grpc.insecure_channel(address, options=options)
        self.auth = [("authorization", f"Bearer {token}"), ("stratus-client", client)]
        self.session: list[tuple[str, str]] = []
        self.node_id = 0

    def _call(self, method: str, body: bytes = b"", timeout: float = 30.0) -> bytes:
        call = self.channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None)
        result: bytes = call(body, metadata=[*self.auth, *self.session], timeout=timeout)
        return result

    def register(self) -> int:
        node, _, session = self._call("Register").decode().partition("\n")
        self.node_id = int(node)
        self.session = [("stratus-node", node), ("stratus-session", session)]
        return self.node_id

    def pull(self) -> Message | None:
        raw = self._call("Pull")
        if not raw:
            return None
        proto = ProtoMessage()
        proto.ParseFromString(raw)
        return message_from_proto(proto)

    def push(self, message: Message) -> None:
        self._call("Push", bytes(message_to_proto(message).SerializeToString()))

    def ping(self) -> None:
        self._call("Ping", timeout=5.0)

    def heartbeat(self, stop: threading.Event) -> None:
        """Ping while the client computes, so a long local fit is not taken for a dropped client."""
        while not stop.wait(HEARTBEAT):
            try:
                self.ping()
            except grpc.RpcError:
                return  # the job has ended or dropped this client: the main loop sees it too

    def leave(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            self._call("Leave", timeout=5.0)
        self.channel.close()


def serve_rounds(
    connection: RelayConnection,
    app: ClientApp,
    *,
    poll_s: float = 0.05,
    stop: Callable[[], bool] = lambda: False,
    on_message: Callable[[Message], None] | None = None,
) -> int:
    """Answer the server's messages until it ends the federation (its relay goes away). Returns how many
    messages were answered."""
    node_id = connection.register()
    context = Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(), run_config={})
    answered = 0
    beating = threading.Event()
    threading.Thread(target=connection.heartbeat, args=(beating,), daemon=True).start()
    try:
        while not stop():
            try:
                message = connection.pull()
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.CANCELLED):
                    return answered  # the job has ended (or dropped this client): nothing more to answer
                raise
            if message is None:
                time.sleep(poll_s)
                continue
            if on_message is not None:
                on_message(message)
            try:
                reply = app(message=message, context=context)
            except Exception as exc:  # as Flower's SuperNode does: the server gets an error reply, the client lives on
                reason = f"{type(exc).__name__}: {exc}"
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
            connection.push(reply)
            answered += 1
    finally:
        beating.set()
        connection.leave()
    return answered


@dataclass
class Prepared:
    """A client's local data, parsed and described for the join request (shape and class names, no values)."""

    parsed: Any

    @property
    def description(self) -> dict[str, Any]:
        shape = self.parsed.image_shape
        described: dict[str, Any] = {"classes": [str(c) for c in self.parsed.classes]}
        if shape is not None:
            described["image_shape"] = [int(v) for v in shape]
        else:
            described["features"] = int(self.parsed.X.shape[1])
        return described


def prepare(data: bytes, filename: str | None = None, target: str | None = None) -> Prepared:
    """Parse the local file with central training's parser (CSV, NPZ, image ZIP): the same checks and classes."""
    from stratus.training.datasets import parse

    if data[:4] == b"PK\x03\x04":
        import io
        import zipfile

        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        fmt = "npz" if names and all(n.endswith(".npy") for n in names) else "images"
    else:
        fmt = "npz" if (filename or "").lower().endswith(".npz") else "csv"
    return Prepared(parse(fmt, data, target=target))


def train_joined(
    answer: dict[str, Any],
    prepared: Prepared,
    *,
    mods: Sequence[Mod] = (),
    observe: FitObserver | None = None,
    threads: int = 1,
) -> int:
    """Take part in the federation the join ``answer`` names, until its server ends it. Returns how many of the
    server's messages this client answered."""
    torch.set_num_threads(threads)
    spec = answer["spec"]
    shape = fed.Shape.of(spec)
    params = TrainParams.model_validate(spec["params"])
    if params.dp_epsilon is not None and params.dp_delta is not None:
        # Client-side DP (training/privacy.py): each round's update clipped and noised, within the job's budget.
        from stratus.training.privacy import client_dp_mods

        rounds = int(spec["rounds"])
        mods = [*mods, *client_dp_mods(params.dp_epsilon, params.dp_delta, rounds, params.dp_max_grad_norm)]
    data = local_data(prepared.parsed, shape, params.test_split, params.seed)
    client = FederatedClient(answer["client"], spec["model"], shape, params, data, observe)
    connection = RelayConnection(answer["address"], answer["client"], answer["token"])
    return serve_rounds(connection, client_app(client, bool(spec["secure_aggregation"]), mods))
