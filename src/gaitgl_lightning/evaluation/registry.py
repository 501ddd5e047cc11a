"""The protocol registry: a protocol is one ``Protocol`` subclass with a ``name``.

Defining the subclass registers it; a dataset config then names it (``protocol: {name: ...,
<options>}``) and ``evaluate`` runs it. The options a protocol accepts are the keyword-only
parameters of its ``run`` method, so a misspelt option fails with the list of valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import ConfigError
from gaitgl_lightning.evaluation.results import EvalResult
from gaitgl_lightning.registration import Registered

PROTOCOLS: dict[str, Protocol] = {}


class Protocol(Registered, registry=PROTOCOLS, kind="protocol"):
    """One evaluation protocol.

    Subclasses set ``name`` and define ``run(embeddings, meta, *, <options>) -> EvalResult``
    with every option keyword-only and defaulted. An instance is callable like ``run``.
    """

    run: Callable[..., EvalResult]

    def __call__(self, embeddings: Tensor, meta: SequenceMeta, **options: Any) -> EvalResult:
        return self.run(embeddings, meta, **options)

    @classmethod
    def option_names(cls) -> list[str]:
        """The keyword-only parameters of ``run``: the options a config may set."""
        return [
            p.name
            for p in inspect.signature(cls.run).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]


def evaluate(name: str, embeddings: Tensor, meta: SequenceMeta, **options: Any) -> EvalResult:
    """Run the protocol ``name`` (a key of ``PROTOCOLS``) with its options.

    The one entry point the training module calls, so that a config can name the protocol and
    its options as data. Unknown protocol or option names fail with the list of valid ones.
    """
    key = str(name).lower().replace("-", "_")
    if key not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[key]
    allowed = protocol.option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"protocol {key!r}: unknown option(s) {unknown}; valid options: {', '.join(allowed)}"
        )
    return protocol(embeddings, meta, **options)
