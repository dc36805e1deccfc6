"""What the benchmarks share."""
import sys


def fresh_postgres(url: str):
    """Drop and create the benchmark's own PostgreSQL database (its name starts with "bench")."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    name = target.database
    if not name or not name.startswith("bench"):
        sys.exit(f"refusing to drop database {name!r}: the benchmark's database name must "
                 "start with 'bench'")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
