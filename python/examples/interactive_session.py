"""Interactive (IPython) sessions: state across cells, magics, settings, errors.

    export HUTCH_URL=http://127.0.0.1:7420/v1
    export HUTCH_TOKEN=$(hutch token --sub me)
    python examples/interactive_session.py
"""

from hutch import InteractiveSandboxSession, InteractiveSettings, KernelType

# Quick start: state persists between run() calls.
with InteractiveSandboxSession(lang="python") as session:
    session.run("value = 21 * 2")
    result = session.run("print(f'Result: {value}')")
    print(result.stdout, end="")  # Result: 42

# Settings.
settings = InteractiveSettings(
    kernel_type=KernelType.IPYTHON,
    max_memory="2GB",
    history_size=500,
    timeout=600,
    poll_interval=0.1,
)
with InteractiveSandboxSession(lang="python", interactive_settings=settings) as session:
    # Libraries already in the image are not reinstalled.
    result = session.run(
        """
import matplotlib.pyplot as plt
import numpy as np

x = np.linspace(0, 10, 100)
y = np.sin(x)

plt.plot(x, y)
plt.title("Sine Wave")
print("Plot created")
""",
        libraries=["matplotlib", "numpy"],
    )
    print(result.stdout, end="")

    # Magics.
    session.run("a = 1\nb = 2")
    print("who:", session.run("%who").stdout.strip())
    print("pwd:", session.run("%pwd").stdout.strip())
    print("shell:", session.run("!echo hi from the shell").stdout.strip())

    # Functions and classes persist.
    session.run(
        """
def fibonacci(n):
    if n <= 1:
        return n
    return fibonacci(n-1) + fibonacci(n-2)
"""
    )
    print(session.run("print(f'Fibonacci(10): {fibonacci(10)}')").stdout, end="")

# Errors do not lose state.
with InteractiveSandboxSession(lang="python", kernel_type="ipython", history_size=200, timeout=300) as session:
    session.run("x = 10")
    result = session.run("y = x / 0")
    if result.exit_code != 0:
        print(f"Error occurred: {result.stderr.strip().splitlines()[-1]}")
        result = session.run("print(f'x is still: {x}')")
        print(result.stdout, end="")

    # Reset the namespace.
    session.run("%reset -f")
    result = session.run("print(x)")
    print("after reset:", "NameError" in result.stderr)

print("all examples passed")
