// Prints openapi.json; see openapi_gen.h.
#include <iostream>

#include "controller/api/rest/openapi_gen.h"

int main() {
  std::cout << ferry::rest::GenerateOpenApi();
  return 0;
}
