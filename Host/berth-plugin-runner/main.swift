print("berth-plugin-runner: not yet implemented")
