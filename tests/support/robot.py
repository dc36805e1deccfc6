"""Solving the "Não sou um robô" proof of work in tests, the way the widget does."""
import altcha


def solve_robot_check(client) -> str:
    """Fetch a challenge from the app and solve it (real work, TestConfig's small difficulty);
    returns the value the widget posts as `altcha`."""
    response = client.get("/altcha/desafio")
    assert response.status_code == 200
    challenge = altcha.Challenge.from_dict(response.get_json())
    solution = altcha.solve_challenge(challenge, timeout=30)
    assert solution is not None
    return altcha.Payload(challenge, solution).to_base64()
