"""compose.yaml's one-shot `setup` service: the credentials the services share, and ./results.

It runs as root before every other service, with the project folder at /project and the
`credentials` volume at /run/ladder:

- The Redis password and Flower's login come from the project's .env when it sets
  REDIS_PASSWORD or FLOWER_BASIC_AUTH, else from the volume, where they were made on the
  first start; they last until `docker compose down -v`. They are read here, not
  interpolated by compose, so that no password shows in `docker compose config`, in a
  command line or in a log: the other services read them from files in the volume (the
  image's entrypoint, docker/entrypoint.sh; Redis its redis.conf).
- ./results is made if missing and, with what is in it, handed to whoever owns the
  project folder; the demo then runs as that user (the entrypoint again), so that the
  files it writes there are theirs. No uid is set by hand.

    .env (optional) --> setup --> /run/ladder/ env, redis.conf, flower-login, owner
                                  /project/results, owned by the folder's owner
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
from pathlib import Path
from urllib.parse import quote

# The names .env may set, as .env.example documents them.
REDIS_PASSWORD = "REDIS_PASSWORD"
FLOWER_BASIC_AUTH = "FLOWER_BASIC_AUTH"
FLOWER_USER = "ladder"
# The compose service Redis is, on the project's network.
REDIS_HOST = "redis:6379"


class SetupError(Exception):
    """A setting that cannot be used; the message names it."""


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines of a compose .env file: comments, blank lines and an `export `
    prefix skipped, one pair of matching quotes taken off."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def check_password(value: str) -> str:
    if not value or not value.isprintable() or value != value.strip():
        raise SetupError(
            f"{REDIS_PASSWORD} in .env must be printable, with no space at either end "
            f"and not empty ({len(value)} characters given)"
        )
    return value


def check_login(value: str) -> str:
    """Flower's --basic-auth: user:password, several separated by commas."""
    for login in value.split(","):
        user, colon, password = login.partition(":")
        if not (user and colon and password) or not login.isprintable():
            raise SetupError(
                f"{FLOWER_BASIC_AUTH} in .env must be user:password (several: "
                "user1:pw1,user2:pw2), printable"
            )
    return value


def kept(path: Path, given: str | None, make: str) -> str:
    """The value .env gives, else the one kept in path, else make; kept in path after."""
    if given:
        value = given
    elif path.is_file() and path.read_text().strip():
        value = path.read_text().strip()
    else:
        value = make
    write(path, value + "\n")
    return value


def write(path: Path, text: str) -> None:
    """Readable by the other services' users (redis, ladder, the folder's owner), in a
    volume that only this project's containers mount."""
    path.write_text(text)
    path.chmod(0o644)


def redis_quoted(value: str) -> str:
    """A string as redis.conf reads it: in double quotes, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hand_over(folder: Path, uid: int, gid: int) -> None:
    """folder, and everything in it, owned by uid:gid."""
    folder.mkdir(exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, uid, gid)


def set_up(project: Path, credentials: Path) -> str:
    """Write the credentials and hand ./results over; a line saying what was done."""
    env = read_env_file(project / ".env")
    password_given = env.get(REDIS_PASSWORD)
    login_given = env.get(FLOWER_BASIC_AUTH)
    password = kept(
        credentials / "redis-password",
        check_password(password_given) if password_given else None,
        secrets.token_hex(24),
    )
    login = kept(
        credentials / "flower-login",
        check_login(login_given) if login_given else None,
        f"{FLOWER_USER}:{secrets.token_hex(12)}",
    )
    url = f"redis://:{quote(password, safe='')}@{REDIS_HOST}/0"
    exported = {
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        # Flower reads its --basic-auth here; redis-cli (the healthcheck) its password.
        FLOWER_BASIC_AUTH: login,
        "REDISCLI_AUTH": password,
    }
    write(
        credentials / "env",
        "".join(f"{name}={shlex.quote(value)}\n" for name, value in exported.items()),
    )
    write(credentials / "redis.conf", f"requirepass {redis_quoted(password)}\n")
    owner = project.stat()
    write(credentials / "owner", f"{owner.st_uid}:{owner.st_gid}\n")
    hand_over(project / "results", owner.st_uid, owner.st_gid)
    origin = {True: ".env", False: "generated"}
    return (
        f"setup: Redis password {origin[bool(password_given)]}, Flower login "
        f"{origin[bool(login_given)]}; ./results owned by {owner.st_uid}:{owner.st_gid}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("/project"))
    parser.add_argument("--credentials", type=Path, default=Path("/run/ladder"))
    args = parser.parse_args()
    try:
        print(set_up(args.project, args.credentials), flush=True)
    except (SetupError, OSError) as error:
        print(f"setup: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
