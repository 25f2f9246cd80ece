"""A town's notifier in a process of its own, until it is killed (for tests/test_notify_delivery.py).

``python tests/notify_deliverer.py TOWN_DIR``; ``TT_TEST_NOTIFY_POLICY`` may hold a JSON object
of :class:`tinytown.notify.deliver.DeliveryPolicy` fields. Prints ``ready`` once its threads run.
"""

from __future__ import annotations

import json
import os
import sys
import time

from tinytown.config import load_config
from tinytown.notify.deliver import DeliveryPolicy, Notifier
from tinytown.store import Town


def main() -> None:
    town = Town.connect(load_config(sys.argv[1], env={}))
    policy = DeliveryPolicy(**json.loads(os.environ.get("TT_TEST_NOTIFY_POLICY") or "{}"))
    Notifier(town, policy).start()
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
