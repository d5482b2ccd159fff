"""A real SMTP server (aiosmtpd) for the alert tests: every message it
receives is written to DIR as N.eml, exactly as it arrived.

    smtp_sink.py PORT DIR     -> prints "ready", serves until killed
"""
import os
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.directory, f"{self.count}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        # Complete files only: the test reads whatever *.eml it finds.
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"


def main() -> int:
    port, directory = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
