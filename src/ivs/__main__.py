from ivs.cli import main

main()
