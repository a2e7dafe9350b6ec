from creditshare.cli import main

main()
