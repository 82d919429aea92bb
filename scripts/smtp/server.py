#!/usr/bin/env python3
"""A real SMTP server for airlock's email tests (aiosmtpd).

Requires STARTTLS (certificate given) and AUTH (PLAIN/LOGIN, one user) before
MAIL FROM, like a production submission port. Each accepted message is stored
as <dir>/<n>.json: {"mail_from", "rcpt_tos", "auth_user", "data"}, written
atomically (temp file, then rename) so tests never read half a message.

  server.py --port P --dir D --cert C --key K --user U --password-file F
"""
import argparse
import asyncio
import itertools
import json
import os
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def auth_user(session):
    data = getattr(session, "auth_data", None)
    return data.login.decode() if isinstance(data, LoginPassword) else None


class Store:
    def __init__(self, folder):
        self.folder = folder
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": auth_user(session),
            "tls": session.ssl is not None,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        tmp = os.path.join(self.folder, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.folder, f"{n:06d}.json"))
        return "250 OK stored"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    a = p.parse_args()
    with open(a.password_file) as f:
        password = f.read().strip()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == a.user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(a.cert, a.key)
    controller = Controller(
        Store(a.dir),
        hostname="127.0.0.1",
        port=a.port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print(f"smtp listening on 127.0.0.1:{a.port}", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
