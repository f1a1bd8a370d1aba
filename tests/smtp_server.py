#!/usr/bin/python3
"""A local SMTP server for the SMTP provider's tests and benchmark.

It listens on 127.0.0.1 and writes every message it accepts into a
directory, one JSON file per message and per recipient: the envelope, the
headers and both bodies as Python's email parser decodes them, and the raw
message. Each file is written under a temporary name and then renamed, so a
reader never sees half of one. Flags make it behave like the servers the
provider has to cope with: one that requires AUTH, one that speaks STARTTLS
or implicit TLS, one that refuses some recipients, one that turns every
transaction or every session away.

The shebang names Debian's interpreter on purpose: `apt-get install
python3-aiosmtpd` installs the module there, and a `python3` found first on
PATH (pyenv, a virtualenv) would not see it.
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import logging
import os
import ssl
import sys
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on; 0 lets the system pick one")
    parser.add_argument("--ready-file",
                        help="written with the port once the server listens")
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--dir", help="where each received message is written")
    output.add_argument("--discard", action="store_true",
                        help="accept messages and keep nothing (benchmarks)")
    parser.add_argument("--auth", metavar="USER:PASSWORD",
                        help="require AUTH with these credentials")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"),
                     help="offer STARTTLS, and require it before MAIL")
    tls.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"),
                     help="speak TLS from the first byte")
    parser.add_argument("--refuse", action="append", default=[], metavar="ADDRESS",
                        help="answer RCPT for this address with 550 (repeatable)")
    parser.add_argument("--answer", metavar="REPLY",
                        help='answer every MAIL with this reply, e.g. "451 4.3.0 Try later"')
    parser.add_argument("--session-answer", metavar="REPLY",
                        help='answer every EHLO and HELO with this reply, e.g. "421 4.3.2 Down"')
    return parser.parse_args()


class Handler:
    def __init__(self, args):
        self.directory = args.dir
        self.refused = {address.lower() for address in args.refuse}
        self.answer = args.answer
        self.session_answer = args.session_answer
        self.sequence = itertools.count()
        self.started = "{:020d}".format(time.time_ns())

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.session_answer:
            return [self.session_answer]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        if self.session_answer:
            return self.session_answer
        session.host_name = hostname
        return "250 {}".format(server.hostname)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.answer:
            return self.answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refused:
            return "550 5.1.1 <{}>: Recipient address rejected: User unknown".format(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.directory is not None:
            self.write(envelope)
        return "250 2.0.0 OK: queued"

    def write(self, envelope):
        raw = envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        number = next(self.sequence)
        for index, recipient in enumerate(envelope.rcpt_tos):
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_to": recipient,
                "headers": [[name, str(value)] for name, value in message.items()],
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
                "raw": raw.decode("utf-8", errors="replace"),
            }
            # The start time first: a server started again in the same
            # directory adds to what the one before it wrote, in order.
            name = "{}-{:08d}-{}.json".format(self.started, number, index)
            write_atomically(os.path.join(self.directory, name), json.dumps(record))


def write_atomically(path, text):
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, ".{}.tmp".format(name))
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def authenticator_for(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        valid = (isinstance(auth_data, LoginPassword)
                 and auth_data.login.decode() == user
                 and auth_data.password.decode() == password)
        # handled=False lets the server answer a failure itself, with 535.
        return AuthResult(success=valid, handled=False)

    return authenticate


async def serve(args):
    handler = Handler(args)
    options = {}
    if args.auth:
        # Tests without TLS authenticate too; a real server would refuse
        # credentials sent in clear, and aiosmtpd warns about it.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        options.update(auth_required=True, auth_require_tls=False,
                       authenticator=authenticator_for(args.auth))
    if args.starttls:
        options.update(tls_context=tls_context(*args.starttls), require_starttls=True)
    implicit = tls_context(*args.implicit_tls) if args.implicit_tls else None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.test", **options),
        host="127.0.0.1", port=args.port, ssl=implicit)
    port = server.sockets[0].getsockname()[1]
    if args.ready_file:
        write_atomically(args.ready_file, str(port))
    print("listening on 127.0.0.1:{}".format(port), file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main():
    args = parse_args()
    # aiosmtpd logs a line per command at INFO, and deprecation notices at
    # WARNING: the log a failing test prints keeps errors only.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
