# lets tests import the project's flat modules from the repository root
