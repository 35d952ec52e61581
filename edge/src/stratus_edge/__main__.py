from stratus_edge.cli import main

main()
