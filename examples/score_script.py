"""Subscribe to the model, wait until it is ready, predict one vector, print the version that answered."""

from consumers import ModelSubscriber
from streamml.config import load_settings

with ModelSubscriber(load_settings()).start(wait=30) as models:  # STREAMML_* from the environment
    if not models.ready:
        raise SystemExit("no model version could be loaded within 30s")
    serving = models.current()  # one snapshot: the answer and its version belong together
    print(f"v{serving.version}: {serving.predict_one({'a': 1.0, 'b': -2.0})!r}")
