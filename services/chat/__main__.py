from services.chat.app import create_app
from services.kit import main

main("chat", create_app)
