from services.chat.app import create_app
from services.kit.server import main

main("chat", create_app)
