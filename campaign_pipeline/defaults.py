"""The package's own luigi settings, applied wherever ``luigi --module campaign_pipeline`` runs.

luigi reads ``luigi.cfg`` from the folder it runs in, so a run from any other folder would
silently lose the retcodes, workers, logging, retry policy and targeting the pipeline relies
on. :func:`install` puts ``defaults.cfg`` (shipped inside the package) first in luigi's list
of config files, before ``/etc/luigi/luigi.cfg``, ``./luigi.cfg`` and ``$LUIGI_CONFIG_PATH``,
so each of those still overrides it key by key.

A relative path in a config file is relative to the folder of the file that set it (as
git's ``include.path`` or nginx's ``include``), never to the folder luigi runs in: a cron
job in the checkout and a run by hand from elsewhere reading the same file use the same
files. :func:`config_folder` says which folder that is; ``defaults.cfg``'s are the checkout
the package is installed from.
"""

from __future__ import annotations

import configparser
import logging
import os
import tempfile
from pathlib import Path

from luigi.configuration import LuigiConfigParser

PACKAGE = Path(__file__).resolve().parent
DEFAULTS = PACKAGE / "defaults.cfg"
# Paths that belong to the package rather than to the folder luigi runs in. A config file
# cannot name them (its relative paths are relative to that folder), so they are filled in
# here, only where no config file sets them.
PACKAGE_PATHS = {
    ("core", "logging_conf_file"): PACKAGE / "logging.conf",
    # the shipped templates of the checkout the package is installed from (pip install -e)
    ("campaign", "templates_dir"): PACKAGE.parent / "config" / "templates",
    # the shipped (empty) suppression file beside them
    ("consent", "suppressions"): PACKAGE.parent / "config" / "suppressions.csv",
}


# luigi's run lock folder: luigi's default (the temp dir's "luigi") is one folder for every
# user, created 0700 by the first: every other user's run would die in a PermissionError
LOCK_PID_DIR = Path(tempfile.gettempdir()) / f"luigi-{os.getuid()}"


def install() -> None:
    """Make the package's defaults the lowest-priority layer of luigi's configuration."""
    paths = LuigiConfigParser._config_paths
    if str(DEFAULTS) not in paths:
        paths.insert(0, str(DEFAULTS))
        # luigi has usually read its files already (luigi/__init__ asks for autoload_range):
        # read them again, ours first, so that every other file still wins
        LuigiConfigParser.reload()
    config = LuigiConfigParser.instance()
    for (section, key), path in PACKAGE_PATHS.items():
        # a value set here stays below the files: a later reload lets any file override it
        if path.exists() and not config.has_option(section, key):
            config.set(section, key, str(path))
    if not config.has_option("core", "lock_pid_dir"):
        config.set("core", "lock_pid_dir", str(LOCK_PID_DIR))
    elif problem := lock_dir_problem(Path(config.get("core", "lock_pid_dir"))):
        # luigi takes its run lock before it reads a task, and reports a folder it cannot
        # use as an uncaught traceback (exit 40): say which setting to fix first
        logging.getLogger("campaign_pipeline").error(
            "setting: [core] lock_pid_dir: %s; luigi cannot take its run lock there and will "
            "stop (exit 40): name a folder this user can write, or remove the key for %s",
            problem,
            LOCK_PID_DIR,
        )


def lock_dir_problem(folder: Path) -> str:
    """Why luigi could not keep its pid files in *folder*, or "". luigi makes the folder
    with ``os.mkdir``, so its parent must exist."""
    target = folder if folder.exists() else folder.parent
    what = "it" if target == folder else f"its parent {target}"
    if not target.exists():
        return f"{folder}: {what} does not exist"
    if not target.is_dir():
        return f"{folder}: {what} is not a folder"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"{folder}: {what} is not writable by this user"
    return ""


def config_folder(section: str, key: str) -> Path:
    """The folder a relative ``[section] key`` of the configuration is relative to: that of
    the last config file that sets it (luigi's order: the last wins), the checkout for
    ``defaults.cfg``, the current folder for a value no file set."""
    for name in reversed(LuigiConfigParser._config_paths):
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # as luigi's: task sections and keys are case-sensitive
        try:
            parser.read(name)
        except configparser.Error:
            continue  # luigi has said what is wrong with it
        if parser.has_option(section, key):
            return PACKAGE.parent if Path(name) == DEFAULTS else Path(name).resolve().parent
    return Path.cwd()
