from services.operator.settings import OperatorSettings
from shared.run import serve

serve("operator", OperatorSettings())
