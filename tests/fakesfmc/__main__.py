"""Run the fake standalone: `python -m tests.fakesfmc --port 9000`, until Ctrl-C or SIGTERM."""

import argparse
import signal
import threading

from .fake import FakeSFMC


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakesfmc", description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--client-id", default="fake-client-id")
    parser.add_argument("--client-secret", default="fake-client-secret")
    parser.add_argument("--signature-mode", choices=("base64", "text"), default="base64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--define", action="append", default=[], metavar="CHANNEL:KEY",
                        help="an active send definition, e.g. sms:otp-sms (repeatable)")
    parser.add_argument("--map", action="append", default=[], metavar="REGISTERED=ACTUAL",
                        help="deliver ENS posts for a registered https URL to a local URL (repeatable)")
    args = parser.parse_args(argv)

    fake = FakeSFMC(client_id=args.client_id, client_secret=args.client_secret,
                    signature_mode=args.signature_mode, seed=args.seed, port=args.port)
    for item in args.define:
        channel, _, key = item.partition(":")
        fake.define(channel, key)
    for item in args.map:
        registered, _, actual = item.partition("=")
        fake.map_delivery(registered, actual)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    fake.start()
    print(f"fake SFMC listening on {fake.url}", flush=True)
    print(f"SFMC_AUTH_BASE_URL={fake.url}", flush=True)
    print(f"SFMC_CLIENT_ID={fake.client_id}", flush=True)
    print(f"SFMC_CLIENT_SECRET={fake.client_secret}", flush=True)
    print(f"control routes: {fake.url}/_fake/stats, /_fake/truth, /_fake/knobs, ...", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        fake.stop()
        print("fake SFMC stopped", flush=True)


if __name__ == "__main__":
    main()
