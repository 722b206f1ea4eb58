"""What a sweep's trials share, loaded once per trial process and kept there from one trial to the next.

A sweep's Tune trials run in actors that Tune reuses (`reuse_actors`), so a trial finds in its process what
earlier trials loaded: the training data (converted, its format read), the evaluators with their data, and
the base model (tokenizer and weights). Each is kept under a fingerprint of everything that shapes it, as the
run identity sees it (embedlab.identity): the content of the data and model files, not their paths, and the
config keys of that part. A trial whose searched keys change its data (a mining setting, a data limit) or its
model loads its own. A trial that finds its inputs here skips their loading and the checks of their files
(the trial that loaded them ran those), not the checks of its own settings (its loss, its mixture). Nothing
kept is handed out to be changed: a trial trains a copy of the base model and evaluates with copies of the
evaluators (they remember settings from their first call).
"""

import copy
from collections import OrderedDict

import torch

from embedlab import run
from embedlab.config import Config
from embedlab.identity import fingerprint, run_identity
from embedlab.model import EmbeddingModel

INPUT_KEYS = ("data.", "evaluators.", "test_evaluators.")  # the config sections load_inputs reads
KEPT = 2  # entries of each kind: a sweep that searches its data keeps the last two, not every one


class _Kept(OrderedDict):
    """The last KEPT entries, by key."""

    def get_or_load(self, key: str, load):
        if key not in self:
            self[key] = load()
            while len(self) > KEPT:
                self.popitem(last=False)
        self.move_to_end(key)
        return self[key]


_inputs, _models = _Kept(), _Kept()


def keys(config: Config) -> tuple[str, str]:
    """The fingerprints of a run's inputs (data and evaluators) and of its base model."""
    identity = run_identity(config, loss=None)
    inputs = {key: value for key, value in identity.items() if key.startswith(INPUT_KEYS)}
    model = {"files": identity["model.fingerprint"], "trust_remote_code": config.model.trust_remote_code}
    return fingerprint(inputs), fingerprint(model)


def prepare(config: Config, device: str | None = None) -> run.Prepared:
    """`run.prepare` for a trial, from the inputs and base model kept in this process (loaded on a miss)."""
    inputs_key, model_key = keys(config)
    print(f"Trial inputs: data and evaluators {_state(_inputs, inputs_key)}, base model {_state(_models, model_key)}")
    loaded = _inputs.get_or_load(inputs_key, lambda: run.load_inputs(config))
    run.check_mixture(config)  # the trial's own mixture settings, which load_inputs checks and run.prepare does not
    model = copy.deepcopy(_base_model(config, model_key)).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fresh = run.Loaded(loaded.dataset, loaded.detected, copy.deepcopy(loaded.evaluators), copy.deepcopy(loaded.test_evaluators))
    return run.prepare(config, device=device, loaded=fresh, model=model)


def _state(kept: _Kept, key: str) -> str:
    return "kept from an earlier trial" if key in kept else "loaded"


def _base_model(config: Config, model_key: str) -> EmbeddingModel:
    """The model as loaded from its files, on the CPU; never trained."""
    return _models.get_or_load(model_key, lambda: EmbeddingModel(config.model.name, device="cpu", trust_remote_code=config.model.trust_remote_code))
