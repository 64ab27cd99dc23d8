"""streamml: streaming machine learning over Apache Kafka, the model as a stream.

The shared core: settings, topic names, Kafka client setup, Avro serde, the
model envelope, the embedded broker, lag and the CLI. It imports no faust,
river or scikit-learn at module level, so an app that only consumes models
stays light.
"""

from streamml.config import Settings, load_settings
from streamml.errors import StreamMLError

__all__ = ["Settings", "load_settings", "StreamMLError", "__version__"]

__version__ = "0.1.0"
