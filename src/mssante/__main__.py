from mssante.cli.main import main

main()
