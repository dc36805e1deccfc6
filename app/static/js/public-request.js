// "Solicitar certificado": show the company's fields only when an e-CNPJ is chosen.
// Without JavaScript the fieldset simply stays visible (its legend says it is for e-CNPJ).
const company = document.querySelector("[data-company-products]");
const product = document.querySelector("#product_id");

if (company && product) {
  const companyProducts = JSON.parse(company.dataset.companyProducts).map(String);
  const update = () => { company.hidden = !companyProducts.includes(product.value); };
  product.addEventListener("change", update);
  update();
}
