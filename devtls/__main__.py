from devtls.cli import main

main()
