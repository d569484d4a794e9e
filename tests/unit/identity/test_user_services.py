"""Registering and signing in against the in-memory user repository (no database), and the
fake held to the SQL repository's contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from chassis import create_db_engine, sqlite_url
from services.identity.adapters.memory import MemoryUserRepository
from services.identity.adapters.orm import User
from services.identity.adapters.repository import (
    AbstractUserRepository,
    DuplicateUsername,
    SqlUserRepository,
)
from services.identity.domain.passwords import Passwords
from services.identity.domain.roles import Role
from services.identity.domain.throttle import Throttle
from services.identity.service_layer import users as use_cases
from tests.support.migrations import migrated


@pytest.fixture
def users() -> MemoryUserRepository:
    return MemoryUserRepository()


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def test_register_normalizes_hashes_and_refuses_a_taken_name(
    users: MemoryUserRepository, passwords: Passwords
) -> None:
    user = use_cases.register(
        users, passwords, username="  Alice ", email="a@example.com", password="pw-1234567"
    )
    assert user.username == "alice" and user.role == Role.CUSTOMER.value
    assert user.password_hash.startswith("$argon2id$") and "pw-1234567" not in user.password_hash
    assert use_cases.find_user(users, "ALICE") is user
    with pytest.raises(use_cases.UsernameTaken):
        use_cases.register(users, passwords, username="alice", email="b@x.org", password="x")
    staff = use_cases.register(
        users, passwords, username="sam", email="s@x.org", password="p", role=Role.STAFF
    )
    assert staff.role == "staff"


def test_sign_in_counts_failures_per_name_and_address_and_throttles(
    users: MemoryUserRepository, passwords: Passwords
) -> None:
    use_cases.register(users, passwords, username="alice", email="a@x.org", password="right")
    throttle = Throttle(limit=2, window=100)

    def sign_in(password: str, ip: str = "192.0.2.1", now: float = 1000) -> User:
        return use_cases.authenticate(
            users, passwords, throttle, username="Alice", password=password, ip=ip, now=now
        )

    with pytest.raises(use_cases.InvalidCredentials):
        sign_in("wrong")
    with pytest.raises(use_cases.InvalidCredentials):
        sign_in("wrong", now=1010)
    with pytest.raises(use_cases.LoginThrottled) as throttled:
        sign_in("right", now=1020)  # even the right password waits
    assert throttled.value.retry_after == 80
    assert sign_in("right", ip="198.51.100.7", now=1020).username == "alice"  # other address
    assert sign_in("right", now=1111).username == "alice"  # both failures aged out
    assert users.failures == []  # a success clears the pair's failures
    with pytest.raises(use_cases.InvalidCredentials):
        use_cases.authenticate(
            users, passwords, throttle, username="nobody", password="x", ip="192.0.2.9", now=1
        )


def test_registrations_are_throttled_per_address(users: MemoryUserRepository) -> None:
    throttle = Throttle(limit=2, window=100)
    use_cases.admit_registration(users, throttle, ip="192.0.2.1", now=1000)
    use_cases.admit_registration(users, throttle, ip="192.0.2.1", now=1010)
    with pytest.raises(use_cases.RegistrationThrottled) as refused:
        use_cases.admit_registration(users, throttle, ip="192.0.2.1", now=1050)
    assert refused.value.retry_after == 50
    use_cases.admit_registration(users, throttle, ip="192.0.2.2", now=1050)  # another address
    use_cases.admit_registration(users, throttle, ip="192.0.2.1", now=1101)  # 1000 aged out
    assert sorted(at for ip, at in users.registrations if ip == "192.0.2.1") == [1010, 1101]


def test_a_password_hashed_with_old_parameters_is_rehashed_at_sign_in(
    users: MemoryUserRepository, passwords: Passwords
) -> None:
    older = Passwords(PasswordHasher(time_cost=2, memory_cost=8, parallelism=1))
    user = use_cases.register(users, older, username="bob", email="b@x.org", password="pw")
    old_hash = user.password_hash
    use_cases.authenticate(
        users, passwords, Throttle(), username="bob", password="pw", ip="192.0.2.1"
    )
    assert user.password_hash != old_hash and not passwords.needs_rehash(user.password_hash)


# --- the fake keeps the SQL repository's contract ------------------------------------------


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = sqlite_url(tmp_path / "identity.db")
    migrated("identity", url)
    engine = create_db_engine(url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _contract(repo: AbstractUserRepository) -> None:
    user = User(id="u1", username="alice", email="a@x.org", password_hash="h", role="customer")
    repo.add(user)
    with pytest.raises(DuplicateUsername):
        repo.add(User(id="u2", username="alice", email="b@x.org", password_hash="h"))
    found = repo.find("alice")
    assert found is not None and found.id == "u1" and repo.find("bob") is None
    for at in (10.0, 20.0, 30.0):
        repo.add_registration_attempt("192.0.2.1", at)
    repo.add_registration_attempt("192.0.2.2", 5.0)
    assert sorted(repo.registration_attempts("192.0.2.1", since=15.0)) == [20.0, 30.0]
    # 10 was forgotten by the call above, whatever `since` says now
    assert sorted(repo.registration_attempts("192.0.2.1", since=0.0)) == [20.0, 30.0]
    assert repo.registration_attempts("192.0.2.2", since=0.0) == [5.0]
    repo.add_login_failure("alice", "192.0.2.1", 10.0)
    repo.add_login_failure("alice", "192.0.2.1", 20.0)
    repo.add_login_failure("alice", "192.0.2.9", 20.0)
    assert sorted(repo.login_failures("alice", "192.0.2.1", since=15.0)) == [20.0]
    repo.clear_login_failures("alice", "192.0.2.1")
    assert repo.login_failures("alice", "192.0.2.1", since=0.0) == []
    assert repo.login_failures("alice", "192.0.2.9", since=0.0) == [20.0]


@pytest.mark.parametrize("kind", ["memory", "sql"])
def test_both_repositories_behave_alike(kind: str, session: Session) -> None:
    _contract(MemoryUserRepository() if kind == "memory" else SqlUserRepository(session))
