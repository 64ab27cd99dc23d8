from streamml_cli import main

main()
