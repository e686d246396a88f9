"""``cranewatch users``: the operations console's users and their roles (add, list, passwd, role, remove).

A password is read from standard input (one line) when it is not a terminal, else prompted for
twice without echo; never from a flag, where it would stay in the shell history and in ``ps``.
It is stored only as a scrypt hash (``cranewatch.web.auth``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from cranewatch.commands.fleet import say
from cranewatch.errors import UsageError
from cranewatch.fleet import current_user
from cranewatch.model import iso_time
from cranewatch.store.options import add_db_option, store_from_args
from cranewatch.store.schema import USER_ROLES

ROLES_HELP = ("viewer reads; analyst also triages (acknowledge, note, assign); officer also disposes "
              "(false-positive, accepted-risk, remediated) and signs gate decisions; admin manages users")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "users",
        help="the web console's users and roles (add, list, passwd, role, remove)",
        description="Manage who may log in to the operations console (cranewatch serve) and what "
        f"each may do. Roles: {ROLES_HELP}.\n\n"
        "The password is read from standard input when it is not a terminal (one line), else "
        "prompted for twice; it is never a command-line option. It is stored as a scrypt hash "
        "(N=2^17, r=8, p=1). Changing a password or role ends the user's sessions.\n\n"
        "Example:\n"
        "  cranewatch users add ana --role analyst          # prompts for the password\n"
        "  printf '%s\\n' \"$PW\" | cranewatch users add meyer --role officer\n"
        "  cranewatch users list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a user (password from stdin or a prompt)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=USER_ROLES)
    passwd = sub.add_parser("passwd", help="set a user's password (stdin or a prompt)")
    passwd.add_argument("name")
    role = sub.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=USER_ROLES)
    remove = sub.add_parser("remove", help="remove a user (their sessions end)")
    remove.add_argument("name")
    listing = sub.add_parser("list", help="list users and roles (no hashes)")
    listing.add_argument("--format", choices=("text", "jsonl"), default="text")
    for p in (add, passwd, role, remove, listing):
        add_db_option(p)
    parser.set_defaults(func=run)


def check_user_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise UsageError(f"user name {name!r}: 1-64 letters, digits or . _ - @")
    return name


def read_password() -> str:
    """The new password: a line of standard input, or typed twice at a prompt."""
    from cranewatch.web.auth import check_password_text

    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise UsageError("no password on standard input (give it as one line, or run at a terminal)")
        return check_password_text(line)
    first = check_password_text(getpass.getpass("password: "))
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    from cranewatch.web.auth import hash_password

    action = args.users_command
    if action == "list":
        with store_from_args(args, readonly=True) as store:
            users = store.users()
        for u in users:
            if args.format == "jsonl":
                print(json.dumps(u.to_json()))
            else:
                say(f"{u.name:<20} {u.role:<8} added {iso_time(u.created_at)} by {u.created_by}")
        if not users and args.format == "text":
            print("no console users (add one: cranewatch users add NAME --role ROLE)")
        return 0
    name = check_user_name(args.name)
    if action in ("add", "passwd"):
        hashed = hash_password(read_password())
        with store_from_args(args) as store:
            if action == "add":
                store.add_user(name, args.role, hashed, by=current_user())
                say(f"user {name} added as {args.role}")
            else:
                store.change_user(name, password=hashed)
                say(f"password of {name} changed; their sessions ended")
    elif action == "role":
        with store_from_args(args) as store:
            store.change_user(name, role=args.role)
        say(f"{name} is now {args.role}; their sessions ended")
    else:
        with store_from_args(args) as store:
            store.remove_user(name)
        say(f"user {name} removed; their sessions ended")
    return 0
